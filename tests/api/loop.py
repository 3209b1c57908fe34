"""Helpers shared by the work-loop and ledger suites: an org tree with staff and many workers,
funded budgets, and task publication. Workers are created in bulk with SQL (a person row, a
role and a session whose token we generate) because hundreds of them are needed for the race
tests; everything the tests then do goes through the HTTP API."""

import base64
import datetime as dt
import hashlib
import secrets

from gp import unique_name, unique_phone


def now():
    return dt.datetime.now(dt.timezone.utc)


def iso(t):
    return t.isoformat().replace("+00:00", "Z")


def new_token():
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")


def bulk_workers(sql, unit_id, n, tags=(), role="worker"):
    """Creates n active workers in unit_id with a live session each; returns
    [{"id", "token", "phone"}]."""
    out = []
    rows = []
    for _ in range(n):
        tok = new_token()
        rows.append((unique_phone(), unique_name("w"), tok))
    for phone, name, tok in rows:
        pid = sql.scalar(
            "WITH p AS (INSERT INTO persons (phone, name, unit_id, tags, password_hash) "
            "VALUES (%s, %s, %s, %s, 'pbkdf2-sha256$1000$AA==$AA==') RETURNING id), "
            "g AS (INSERT INTO role_grants (person_id, role, unit_id) "
            "      SELECT id, %s, %s FROM p RETURNING person_id), "
            "s AS (INSERT INTO sessions (token_hash, person_id, expires_at) "
            "      SELECT %s, person_id, now() + interval '1 day' FROM g RETURNING person_id) "
            "SELECT person_id FROM s",
            (phone, name, unit_id, list(tags), role, unit_id,
             hashlib.sha256(tok.encode()).digest()))
        out.append({"id": pid, "token": tok, "phone": phone})
    return out


class Tree:
    """A street with one community, one grid, one micro-grid, a grid staff member and a funded
    grid budget."""

    def __init__(self, api, admin, sql, budget=100000):
        self.api, self.admin, self.sql = api, admin, sql
        tok = admin["token"]
        self.street = admin["unit_id"]
        self.community = self._unit(tok, self.street)
        self.grid = self._unit(tok, self.community)
        self.micro = self._unit(tok, self.grid)
        self.staff = bulk_workers(sql, self.grid, 1, role="grid_staff")[0]
        if budget:
            self.fund(self.grid, budget)

    def _unit(self, tok, parent):
        r = self.api.post("/api/v1/units", {"parent_id": parent, "name": unique_name("u")}, token=tok)
        assert r.status_code == 201, r.text
        return r.json()["id"]

    def fund(self, unit, amount):
        a = self.admin["person_id"]
        self.sql.scalar("SELECT gp_issue(%s, %s, %s, 'test seed')", (a, self.street, amount))
        if unit != self.street:
            self.sql.scalar("SELECT gp_grant(%s, %s, %s, %s, 'to community')",
                            (a, self.street, self.community, amount))
        if unit == self.grid:
            self.sql.scalar("SELECT gp_grant(%s, %s, %s, %s, 'to grid')",
                            (a, self.community, self.grid, amount))

    def workers(self, n, tags=()):
        return bulk_workers(self.sql, self.micro, n, tags)

    def publish(self, token=None, **over):
        body = {
            "unit_id": self.grid, "title": unique_name("task"), "category": "patrol",
            "reward": 10, "slots": 3, "ends_at": iso(now() + dt.timedelta(hours=2)),
            "claim_ttl_s": 3600, "review_window_s": 3600,
            "lat": 30.6570, "lng": 104.0800, "geofence_m": 500,
        }
        body.update(over)
        r = self.api.post("/api/v1/tasks", body, token=token or self.staff["token"])
        assert r.status_code == 201, r.text
        return r.json()

    def balance(self, worker_id):
        return self.sql.scalar("SELECT (body ->> 'available')::bigint FROM gp_balance(%s, %s)",
                               (worker_id, worker_id))

    def ledger_ok(self):
        problems = self.sql.scalar("SELECT gp_ledger_check()")
        assert problems == [], problems


def report_body(assignment_id, made_at=None, report_id=None, lat=30.6571, lng=104.0801):
    return {
        "assignment_id": assignment_id,
        "client_report_id": report_id or secrets.token_hex(8),
        "made_at": iso(made_at or now()),
        "lat": lat, "lng": lng, "notes": "fire exits clear",
        "evidence": [{"url": "https://img.example.cn/a.jpg", "sha256": hashlib.sha256(b"x").hexdigest()}],
    }
