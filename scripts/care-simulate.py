#!/usr/bin/python3
"""scripts/care-simulate.py -- a simulated month of care visits on the demo street, for looking
at the schedule and the coverage API (docs/CARE.md, "Simulating a month"). Development only:
it needs the database superuser and a running server with the demo data.

    . var/env; scripts/care-simulate.py --url http://127.0.0.1:8080 --days 30

Each simulated day moves the care data one day into the past (every timestamp of the care
tables: the same as moving the database clock one day forward for them), waits for the
server's care sweep to escalate what became overdue, and then lets the responsible workers
visit through the API what is due: most on the day it falls due, some a few days late, a few
never; most residents are well, some need help, a few are not at home (visited again the next
day). Workers get sessions made directly in the database (no password hashing for 1,200
logins). At the end it prints the coverage of the street for the simulated month, as the
street admin sees it.
"""

import argparse
import base64
import datetime as dt
import hashlib
import json
import os
import random
import secrets
import sys
import time

import psycopg2
import requests

SHIFT = {
    "care_residents": ["entered_at", "last_visit_at", "removed_at", "created_at", "updated_at"],
    "care_dues": ["due_at", "grace_until", "escalated_at", "done_at", "closed_at", "created_at"],
    "care_visits": ["made_at", "received_at"],
    "care_followups": ["opened_at", "closed_at"],
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default="http://127.0.0.1:8080")
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--street", default="锦江区示范街道")
    ap.add_argument("--seed", type=int, default=15)
    a = ap.parse_args()
    rnd = random.Random(a.seed)
    db = psycopg2.connect(os.environ["GRIDPOINTS_DATABASE_ADMIN_URL"])
    db.autocommit = True
    cur = db.cursor()
    cur.execute("SELECT id FROM org_units WHERE level = 'street' AND name = %s", (a.street,))
    street = cur.fetchone()[0]
    http = requests.Session()
    tokens = {}

    def token(person):
        if person not in tokens:
            tok = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")
            cur.execute("INSERT INTO sessions (token_hash, person_id, expires_at) "
                        "VALUES (%s, %s, now() + interval '1 day')",
                        (hashlib.sha256(tok.encode()).digest(), person))
            tokens[person] = tok
        return tokens[person]

    # what each due visit will meet: a visit on time, late (after its grace), or none
    fate = {}
    stats = {"visits": 0, "extra": 0, "late": 0, "needs_help": 0, "not_home": 0}
    started = dt.datetime.now(dt.timezone.utc)
    for day in range(1, a.days + 1):
        for table, cols in SHIFT.items():
            sets = ", ".join(f"{c} = {c} - interval '1 day'" for c in cols)
            cur.execute(f"UPDATE {table} SET {sets} WHERE street_id = %s", (street,))
        time.sleep(2.5)  # the care sweep escalates what is overdue now (timers.sweep_interval)
        cur.execute("SELECT d.id, d.due_at, d.grace_until, r.id, r.worker_id, r.lat, r.lng "
                    "FROM care_dues d JOIN care_residents r ON r.id = d.resident_id "
                    "WHERE d.street_id = %s AND d.state = 'open' AND d.due_at <= now()",
                    (street,))
        for due_id, due_at, grace_until, rid, worker, lat, lng in cur.fetchall():
            f = fate.setdefault(due_id, rnd.choices(["on_time", "late", "never"],
                                                    [0.86, 0.10, 0.04])[0])
            now = dt.datetime.now(dt.timezone.utc)
            if f == "never" or (f == "late" and now <= grace_until + dt.timedelta(days=1)):
                continue
            outcome = rnd.choices(["well", "needs_help", "not_home"], [0.88, 0.07, 0.05])[0]
            body = {"resident_id": rid, "client_visit_id": f"sim-{due_id}-{day}",
                    "made_at": now.isoformat().replace("+00:00", "Z"),
                    "lat": lat, "lng": lng, "outcome": outcome, "notes": "走访正常"}
            if outcome == "needs_help":
                body["help_kind"] = rnd.choice(["health", "meals", "repairs", "mood", "other"])
            r = http.post(a.url + "/api/v1/care/visits", json=body,
                          headers={"Authorization": "Bearer " + token(worker)}, timeout=30)
            if r.status_code != 201:
                print("visit refused:", r.status_code, r.text, file=sys.stderr)
                continue
            stats["visits"] += 1
            v = r.json()["visit"]
            stats["late"] += "late" in v["flags"]
            stats["extra"] += "extra" in v["flags"]
            if outcome != "well":
                stats[outcome] += 1
        print(f"day {day:2d}: {stats}", file=sys.stderr)
    # the street admin's view of the month just simulated
    cur.execute("SELECT id FROM persons WHERE phone = '13900000001'")
    admin = cur.fetchone()[0]
    end = dt.datetime.now(dt.timezone.utc)
    frm = end - dt.timedelta(days=a.days) - (end - started)
    r = http.get(a.url + "/api/v1/care/coverage", params={
        "unit_id": street, "from": frm.isoformat().replace("+00:00", "Z"),
        "to": end.isoformat().replace("+00:00", "Z")},
        headers={"Authorization": "Bearer " + token(admin)}, timeout=30)
    print(json.dumps(r.json(), ensure_ascii=False, indent=2))


if __name__ == "__main__":
    main()
