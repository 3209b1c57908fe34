"""One pagination step for every list route (api_page_or_reply): ?limit= within
server.page_size_max, and ?cursor= checked by its kind -- a positive id where the SQL function
pages by id, an opaque key of at most 200 characters where the SQL function decodes it. A bad
limit is 400 invalid_query naming "limit"; a bad cursor is 400 invalid_cursor naming "cursor",
on every route alike, before any SQL runs."""

import pytest

from gp import error_code, unique_name

# Routes a street admin may list; which kind of cursor each takes.
ID_CURSOR = ["/api/v1/units", "/api/v1/people", "/api/v1/budgets"]
KEY_CURSOR = ["/api/v1/tasks", "/api/v1/merchants", "/api/v1/reviews"]


def field(r):
    return r.json()["error"].get("field")


@pytest.mark.parametrize("path", ID_CURSOR + KEY_CURSOR)
def test_limit_is_checked_alike(api, admin, path):
    tok = admin["token"]
    r = api.get(path, token=tok)
    assert r.status_code == 200, r.text
    for bad in ("0", "-1", "100000", "ten", "", "1.5"):
        r = api.get(path, params={"limit": bad}, token=tok)
        assert r.status_code == 400 and error_code(r) == "invalid_query", (bad, r.text)
        assert field(r) == "limit"
    r = api.get(path, params={"limit": "1"}, token=tok)
    assert r.status_code == 200 and len(r.json()["items"]) <= 1


@pytest.mark.parametrize("path", ID_CURSOR)
def test_id_cursor_is_a_positive_id(api, admin, path):
    tok = admin["token"]
    for bad in ("garbage", "0", "-3", "1e3", "99999999999999999999", "x" * 300):
        r = api.get(path, params={"cursor": bad}, token=tok)
        assert r.status_code == 400 and error_code(r) == "invalid_cursor", (bad, r.text)
        assert field(r) == "cursor"
    r = api.get(path, params={"cursor": "1"}, token=tok)
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("path", KEY_CURSOR)
def test_key_cursor_is_bounded_here_and_decoded_in_sql(api, admin, path):
    tok = admin["token"]
    # Too long for any key we issue: refused before the database, as invalid_cursor.
    r = api.get(path, params={"cursor": "k" * 201}, token=tok)
    assert r.status_code == 400 and error_code(r) == "invalid_cursor", r.text
    assert field(r) == "cursor"
    # Short garbage reaches the SQL function, which refuses it alike.
    r = api.get(path, params={"cursor": "garbage"}, token=tok)
    assert r.status_code == 400 and error_code(r) == "invalid_cursor", r.text


def test_key_cursor_pages_through_a_list(api, admin):
    """A key cursor from next_cursor reaches the SQL function intact (via the jsonb args)."""
    tok = admin["token"]
    made = []
    for i in range(3):
        r = api.post("/api/v1/merchants", {"name": unique_name("paging"), "address": "1 Road",
                                           "unit_id": admin["unit_id"], "contact_name": "Li",
                                           "contact_phone": "028-8888-0000"}, token=tok)
        assert r.status_code == 201, r.text
        made.append(r.json()["id"])
    seen, cursor = [], None
    for _ in range(5):
        params = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = api.get("/api/v1/merchants", params=params, token=tok)
        assert page.status_code == 200, page.text
        body = page.json()
        assert len(body["items"]) <= 2
        seen += [m["id"] for m in body["items"]]
        cursor = body.get("next_cursor")
        if not cursor:
            break
    assert sorted(seen) == sorted(set(seen)) and set(made) <= set(seen)
