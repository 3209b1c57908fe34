#!/usr/bin/env python3
"""scripts/bench/sqlcost.py -- what one write operation costs PostgreSQL, counted exactly.

The rates of `make bench` drift with the machine; these counts do not. For each operation the
tool runs N calls, each in its own transaction, one after another on one connection, and
divides:

  statements   every SQL statement executed, the call itself and every statement nested in it
               (PL/pgSQL statements that reach the executor, foreign-key checks, triggers'
               queries): pg_stat_statements with track = all, utility statements not counted
  fk checks    of those, the foreign-key checks (the RI trigger's `SELECT 1 ... FOR KEY SHARE`)
  index ent.   index entries written: B-tree leaf insert records in the WAL (pg_walinspect),
               plus GIN/GiST inserts
  heap         heap records in the WAL: ins(ert) / upd(ate, not HOT) / hot (HOT update) /
               lock (a row lock that had to be written) / del(ete)
  WAL bytes    WAL written between the first call and the last commit, full-page images left out
               (they depend on when the last checkpoint was, not on the operation)
  CPU ms       the backend's CPU time (/proc/<pid>/schedstat), which includes parsing and
               planning and everything above

Usage (builds nothing; `make` first):

  scripts/bench/sqlcost.py [--bin build/gridpointsd] [--n 200] [--workers 6000]
                           [--hist-tasks 100] [--dir var/sqlcost] [--keep] [--json FILE]
                           [--only claim,submit,...]

It starts a private PostgreSQL (scripts/services.sh, under --dir, purged first) with
pg_stat_statements and pg_walinspect, migrates, loads the demo street and the bench data set
(scripts/bench/dataset.sql, scaled by --workers and --hist-tasks), then measures:

  publish      gp_task_publish by a grid's staff member (a 1-slot task)
  claim        gp_task_claim of a street-level task by N distinct workers
  submit       gp_report_submit of those N assignments
  approve      gp_report_decide(approve) of those N reports (pays the award)
  sweep_award  the auto-approval sweep: N more reports with a 1 s review window, paid by
               gp_timers_sweep; per award
  ledger_vest  gp_ledger_sweep vesting N pending awards (1 s objection period); per vest
  ledger_expire gp_ledger_sweep expiring those N lots (20 s expiry); per expired lot
  charge       gp_mrc_charge with a worker's pay code (gp_paycode_issue is set-up, not counted)
  award_shape  the minimal award: 1 transaction row, 2 postings, 2 guarded balance updates, in
               tables of schema `shape` made here (docs/BENCHMARKS.md, "logical shapes")

Prints a Markdown table (and --json writes the figures). Exits non-zero if an operation fails.
"""

import argparse
import json
import os
import subprocess
import sys
import time

import psycopg2

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

PG_EXTRA = """
# --- added by scripts/bench/sqlcost.py ---
shared_preload_libraries = 'pg_stat_statements'
pg_stat_statements.track = all
pg_stat_statements.track_utility = off
pg_stat_statements.max = 10000
autovacuum = off
checkpoint_timeout = 1d
max_wal_size = 20GB
"""

SHAPE_SQL = """
DROP SCHEMA IF EXISTS shape CASCADE;
CREATE SCHEMA shape;
CREATE TABLE shape.accounts (id bigint PRIMARY KEY, balance bigint NOT NULL CHECK (balance >= 0),
                             version bigint NOT NULL DEFAULT 0);
CREATE TABLE shape.txns (id bigserial PRIMARY KEY, kind text NOT NULL,
                         created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE shape.postings (txn_id bigint NOT NULL REFERENCES shape.txns (id),
                             account_id bigint NOT NULL REFERENCES shape.accounts (id),
                             amount bigint NOT NULL, balance_after bigint NOT NULL,
                             PRIMARY KEY (account_id, txn_id));
INSERT INTO shape.accounts SELECT i, CASE WHEN i = 0 THEN 1000000000 ELSE 0 END
  FROM generate_series(0, 100000) i;
"""

# The minimal award: one transaction row, two postings with running balances, two guarded
# balance updates (the budget may not go negative), one commit.
SHAPE_AWARD = """
WITH t AS (INSERT INTO shape.txns (kind) VALUES ('award') RETURNING id),
     b AS (UPDATE shape.accounts SET balance = balance - 10, version = version + 1
            WHERE id = 0 AND balance >= 10 RETURNING id, balance),
     w AS (UPDATE shape.accounts SET balance = balance + 10, version = version + 1
            WHERE id = %(w)s RETURNING id, balance)
INSERT INTO shape.postings (txn_id, account_id, amount, balance_after)
SELECT t.id, b.id, -10, b.balance FROM t, b
UNION ALL SELECT t.id, w.id, 10, w.balance FROM t, w
"""


def sh(*args, env=None, check=True, quiet=False):
    r = subprocess.run(args, cwd=REPO, env=env, text=True,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if check and r.returncode != 0:
        sys.exit(f"sqlcost: {' '.join(args)} failed:\n{r.stdout}")
    if not quiet:
        return r.stdout
    return ""


def read_env(d):
    env = dict(os.environ)
    with open(os.path.join(d, "env")) as f:
        for line in f:
            if line.startswith("export "):
                k, v = line[7:].strip().split("=", 1)
                env[k] = v
    # psql calls the API functions by their plain names, as the server does (schema gp)
    env["PGOPTIONS"] = env.get("PGOPTIONS", "") + " -c search_path=gp,public"
    return env


def cpu_ns(pid):
    with open(f"/proc/{pid}/schedstat") as f:
        return int(f.read().split()[0])


class Meter:
    """Counts what N calls on `conn` cost; `reader` is a second connection that reads the
    statistics (its own statements are left out by their text)."""

    def __init__(self, conn, reader):
        self.conn, self.reader = conn, reader
        with conn.cursor() as c:
            c.execute("SELECT pg_backend_pid()")
            self.pid = c.fetchone()[0]
        conn.commit()  # no transaction left open: it would freeze now() for the calls

    def start(self):
        with self.reader.cursor() as c:
            c.execute("SELECT pg_stat_statements_reset()")
            c.execute("SELECT pg_current_wal_insert_lsn()")
            self.lsn0 = c.fetchone()[0]
        self.cpu0 = cpu_ns(self.pid)

    def stop(self, n):
        cpu = cpu_ns(self.pid) - self.cpu0
        with self.reader.cursor() as c:
            # flushed, not inserted: pg_walinspect reads only what is on disk, and every
            # measured commit was flushed (synchronous_commit = on)
            c.execute("SELECT pg_current_wal_flush_lsn()")
            lsn1 = c.fetchone()[0]
            c.execute("""SELECT coalesce(sum(calls), 0),
                                coalesce(sum(calls) FILTER (WHERE query LIKE '%%FOR KEY SHARE OF%%'), 0)
                           FROM pg_stat_statements
                          WHERE query NOT LIKE '%%pg_stat_statements%%'
                            AND query NOT LIKE '%%pg_current_wal_%%'
                            AND query NOT LIKE '%%pg_get_wal_records_info%%'""")
            stmts, fks = c.fetchone()
            c.execute("""SELECT resource_manager, record_type, count(*),
                                sum(record_length - fpi_length)
                           FROM pg_get_wal_records_info(%s, %s)
                          GROUP BY 1, 2""", (self.lsn0, lsn1))
            recs = c.fetchall()
        wal = sum(r[3] for r in recs)
        idx = sum(r[2] for r in recs
                  if (r[0] == "Btree" and r[1] in ("INSERT_LEAF", "INSERT_POST"))
                  or (r[0] in ("Gin", "Gist", "SPGist", "Hash") and "INSERT" in r[1]))

        def heap(*types):
            return sum(r[2] for r in recs if r[0] in ("Heap", "Heap2")
                       and any(r[1].startswith(t) for t in types)) / n

        return {
            "n": n,
            "statements": float(stmts) / n,
            "fk_checks": float(fks) / n,
            "index_entries": idx / n,
            "heap_insert": heap("INSERT", "MULTI_INSERT"),
            "heap_update": heap("UPDATE"),
            "heap_hot_update": heap("HOT_UPDATE"),
            "heap_lock": heap("LOCK"),
            "heap_delete": heap("DELETE"),
            "wal_bytes": wal / n,
            "cpu_ms": cpu / n / 1e6,
        }


def run_calls(conn, sql, params_list, check=None):
    """One transaction per call (autocommit off, commit after each), as the server does."""
    with conn.cursor() as c:
        for p in params_list:
            c.execute(sql, p)
            if check:
                check(c.fetchone(), p)
            conn.commit()


def reply_ok(row, p):
    """A refusal is an exception (gp_raise), which ends the run; a reply is a row."""
    if row is None or row[0] is None:
        raise SystemExit(f"sqlcost: call with {p} answered nothing")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", default=os.path.join(REPO, "build/gridpointsd"))
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--workers", type=int, default=6000)
    ap.add_argument("--hist-tasks", type=int, default=100)
    ap.add_argument("--dir", default=os.path.join(REPO, "var/sqlcost"))
    ap.add_argument("--keep", action="store_true", help="leave PostgreSQL and Redis running")
    ap.add_argument("--json", help="also write the figures to this file")
    ap.add_argument("--only", help="comma-separated operations to measure")
    a = ap.parse_args()
    n = a.n
    only = set(a.only.split(",")) if a.only else None
    if a.workers < max(6000, 2 * n + 100):
        # every claim is a new worker; the history's grid tasks take 60 workers of each grid
        sys.exit("sqlcost: --workers must be at least max(6000, 2 * N + 100)")

    d = os.path.abspath(a.dir)
    svc = os.path.join(REPO, "scripts/services.sh")
    sh(svc, "purge", d, check=False)
    sh(svc, "start", d)
    env = read_env(d)
    with open(os.path.join(env["GP_PG_DATA"], "postgresql.conf"), "a") as f:
        f.write(PG_EXTRA)
    sh(svc, "stop-pg", d)
    sh(svc, "start", d)
    env = read_env(d)
    try:
        measure(a, n, only, env)
    finally:
        if not a.keep:
            sh(svc, "stop", d, check=False)
        else:
            print(f"sqlcost: services left running: . {d}/env", file=sys.stderr)


def measure(a, n, only, env):
    conf = os.path.join(REPO, "config/gridpoints.conf")
    sh(a.bin, "-c", conf, "migrate", env=env)
    sh(a.bin, "-c", conf, "demo-data", env=env)
    admin_url = env["GRIDPOINTS_DATABASE_ADMIN_URL"]
    sh("psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-v", f"workers={a.workers}",
       "-v", f"hist_tasks={a.hist_tasks}", "-v", "open_per_grid=1", "-v", "seed=sqlcost",
       "-f", "scripts/bench/dataset.sql", admin_url, env=env)
    admin = psycopg2.connect(admin_url)
    admin.autocommit = True
    with admin.cursor() as c:
        c.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        c.execute("CREATE EXTENSION IF NOT EXISTS pg_walinspect")
        c.execute(SHAPE_SQL)
        c.execute("VACUUM ANALYZE")
        c.execute("CHECKPOINT")
    # The measured connection: as the server connects (its role and search_path).
    conn = psycopg2.connect(admin_url)
    with conn.cursor() as c:
        c.execute("SET search_path = gp, public")
    conn.commit()
    meter = Meter(conn, admin)
    q = admin.cursor()
    q.execute("SET search_path = gp, public")

    def one(sql, args=()):
        q.execute(sql, args)
        return q.fetchone()

    def rows(sql, args=()):
        q.execute(sql, args)
        return q.fetchall()

    results = {}

    def op(name, sql, params, check=reply_ok, per=None):
        if only and name not in only:
            return
        # One warm-up call outside the count: plans cached, as in a running server.
        run_calls(conn, sql, params[:1], check)
        meter.start()
        run_calls(conn, sql, params[1:], check)
        results[name] = meter.stop(per or (len(params) - 1))
        print(f"sqlcost: {name}: {json.dumps(results[name])}", file=sys.stderr)

    admin_id = one("SELECT min(person_id) FROM bench.staff WHERE role = 'street_admin'")[0]
    street = one("SELECT id FROM org_units WHERE level = 'street' AND name = '锦江区示范街道'")[0]
    lat, lng = 30.660, 104.080
    ends = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 86400))

    def publish_args(slots, review_s, title):
        return json.dumps({"unit_id": street, "title": title, "category": "fire_safety",
                           "reward": 10, "slots": slots, "lat": lat, "lng": lng,
                           "geofence_m": 3000, "ends_at": ends, "claim_ttl_s": 86400,
                           "review_window_s": review_s})

    # publish: a grid's staff member publishes a 1-slot task in their grid
    grid_staff = rows("""SELECT s.person_id, s.unit_id FROM bench.staff s
                               WHERE s.role = 'grid_staff' ORDER BY s.unit_id LIMIT 20""")
    pub = []
    for i in range(n + 1):
        p, u = grid_staff[i % len(grid_staff)]
        pub.append((p, json.dumps({"unit_id": u, "title": f"sqlcost {i}", "category": "fire_safety",
                                   "reward": 10, "slots": 1, "lat": lat, "lng": lng,
                                   "geofence_m": 3000, "ends_at": ends, "claim_ttl_s": 86400,
                                   "review_window_s": 3600})))
    op("publish", "SELECT gp_task_publish(%s, %s::jsonb)", pub)

    def street_task(slots, review_s, title):
        r = one("SELECT (gp_task_publish(%s, %s::jsonb)).body ->> 'id'",
                (admin_id, publish_args(slots, review_s, title)))
        return int(r[0])

    workers = [r[0] for r in rows("SELECT person_id FROM bench.workers ORDER BY n")]

    def report_body(asg, i):
        return json.dumps({
            "assignment_id": asg, "client_report_id": f"sqlcost-{asg}",
            "made_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "lat": lat + 0.0003, "lng": lng - 0.0002, "notes": "楼道消防通道畅通，灭火器在有效期内",
            "evidence": [{"url": f"https://img.example.cn/sqlcost/{asg}.jpg",
                          "sha256": "%064x" % (asg * 7919 + i)}]})

    need_claims = not only or only & {"claim", "submit", "approve"}
    if need_claims:
        t1 = street_task(n + 1, 3600, "sqlcost claims")
        claims = [(w, t1) for w in workers[:n + 1]]
        op("claim", "SELECT gp_task_claim(%s, %s)", claims)
        asg = rows("SELECT id, worker_id FROM assignments WHERE task_id = %s ORDER BY id",
                        (t1,))
        if len(asg) != n + 1:
            # claims were skipped (--only): make them now, not counted
            run_calls(conn, "SELECT gp_task_claim(%s, %s)", claims, reply_ok)
            asg = rows("SELECT id, worker_id FROM assignments WHERE task_id = %s ORDER BY id",
                            (t1,))
        subs = [(w, report_body(a_, i)) for i, (a_, w) in enumerate(asg)]
        op("submit", "SELECT gp_report_submit(%s, %s::jsonb)", subs)
        if only and "submit" not in only:
            run_calls(conn, "SELECT gp_report_submit(%s, %s::jsonb)", subs, None)
        op("approve", "SELECT gp_report_decide(%s, %s, true, NULL)",
           [(admin_id, a_) for a_, _ in asg])

    if not only or "sweep_award" in only:
        t2 = street_task(n, 1, "sqlcost sweep")
        ws = workers[n + 1:2 * n + 1]
        run_calls(conn, "SELECT gp_task_claim(%s, %s)", [(w, t2) for w in ws], reply_ok)
        asg = rows("SELECT id, worker_id FROM assignments WHERE task_id = %s ORDER BY id",
                        (t2,))
        run_calls(conn, "SELECT gp_report_submit(%s, %s::jsonb)",
                  [(w, report_body(a_, i)) for i, (a_, w) in enumerate(asg)], reply_ok)
        time.sleep(1.5)
        meter.start()
        with conn.cursor() as c:
            for _ in range(1000):
                c.execute("SELECT gp_timers_sweep(200)")
                conn.commit()
                c.execute("SELECT count(*) FROM assignments WHERE task_id = %s AND state = 'approved'",
                          (t2,))
                done = c.fetchone()[0]
                conn.commit()
                if done == len(asg):
                    break
                time.sleep(0.05)
        if done != len(asg):
            sys.exit(f"sqlcost: the sweep paid {done} of {len(asg)} awards")
        results["sweep_award"] = meter.stop(len(asg))
        print(f"sqlcost: sweep_award: {json.dumps(results['sweep_award'])}", file=sys.stderr)

    if not only or only & {"ledger_vest", "ledger_expire"}:
        # gp_ledger_sweep: N pending awards (1 s objection period) vested, then their N lots
        # (20 s expiry: none is due before every award has vested) expired, by the sweep in
        # batches of 200; per vest / per expired lot
        one("SELECT gp_policy_set(%s, %s, %s::jsonb)",
            (admin_id, street, '{"objection_period": 1, "expiry": "20 seconds"}'))
        fake = 10**12 + int(time.time())
        one("SELECT gp_task_reserve(%s, %s, %s, %s)", (fake, street, 10 * n, admin_id))
        conn.commit()
        ws = workers[2 * n + 1:3 * n + 1]
        run_calls(conn, "SELECT gp_task_award(%s, %s, %s, 10, %s)",
                  [(fake, fake + 1 + i, w, admin_id) for i, w in enumerate(ws)])
        t0 = time.time()  # every lot is due 20 s after its award: all of them by t0 + 20

        def sweep_until(key, name):
            meter.start()
            done = 0
            with conn.cursor() as c:
                for _ in range(1000):
                    c.execute("SELECT gp_ledger_sweep(200)")
                    done += c.fetchone()[0][key]
                    conn.commit()
                    if done >= len(ws):
                        break
                    time.sleep(0.05)
            if done != len(ws):
                sys.exit(f"sqlcost: the ledger sweep did {done} of {len(ws)} ({key})")
            results[name] = meter.stop(len(ws))
            print(f"sqlcost: {name}: {json.dumps(results[name])}", file=sys.stderr)

        time.sleep(1.5)
        sweep_until("vested", "ledger_vest")
        time.sleep(max(0.0, t0 + 20.5 - time.time()))
        sweep_until("expired", "ledger_expire")
        one("SELECT gp_policy_set(%s, %s, %s::jsonb)",
            (admin_id, street, '{"objection_period": 0, "expiry": "none"}'))
        conn.commit()

    if not only or "charge" in only:
        m = one("SELECT id FROM merchants ORDER BY id LIMIT 1")[0]
        key = "mk_" + "5" * 16
        one("SELECT gp_merchant_key_create(%s, %s, %s, 'v1.00', false, 0)", (admin_id, m, key))
        payers = rows("""SELECT a.owner_id FROM accounts a
                               WHERE a.kind = 'worker' AND a.balance >= 5
                               ORDER BY a.owner_id LIMIT %s""", (n + 1,))
        if len(payers) < n + 1:
            sys.exit(f"sqlcost: only {len(payers)} workers can pay 5 points: raise --hist-tasks")
        codes = []
        for i, (w,) in enumerate(payers):
            nonce = "%032x" % (i + 1)
            one("SELECT gp_paycode_issue(%s, %s, 900)", (w, nonce))
            codes.append((key, nonce, w, f"merchant:{m}", nonce))
        op("charge", "SELECT gp_mrc_charge(%s, %s, %s, 5, 'sqlcost', %s, %s, 'sqlcost')", codes)

    if not only or "award_shape" in only:
        op("award_shape", SHAPE_AWARD, [{"w": 1 + i} for i in range(n + 1)], check=None)

    cols = [("statements", "statements", 1), ("fk_checks", "FK checks", 1),
            ("index_entries", "index entries", 1), ("heap_insert", "heap ins", 1),
            ("heap_update", "heap upd", 1), ("heap_hot_update", "heap HOT", 1),
            ("heap_lock", "row locks", 1), ("wal_bytes", "WAL bytes", 0), ("cpu_ms", "CPU ms", 2)]
    print(f"| operation (N = {n}) | " + " | ".join(c[1] for c in cols) + " |")
    print("|---|" + "---:|" * len(cols))
    for name, r in results.items():
        print(f"| {name} | " + " | ".join(f"{r[k]:,.{p}f}" for k, _, p in cols) + " |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
