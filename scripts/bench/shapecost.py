#!/usr/bin/python3
"""scripts/bench/shapecost.py -- the per-operation SQL cost table of `make bench` (issue 12):
what each write operation of gridpoints and each minimal logical shape costs PostgreSQL,
counted exactly (statements incl. nested, FK checks, index entries written, heap records, WAL
bytes, backend CPU ms), so that the issue's table can be regenerated after every change.

  shapecost.py --bin BIN [--n 200] [--dir var/bench/sqlcost] --json OUT

Runs scripts/bench/sqlcost.py (its own private PostgreSQL under --dir, the bench data set
scaled down; it measures publish, claim, submit, approve, sweep_award and charge through the
gp functions), keeps that PostgreSQL running, loads scripts/bench/shapes.sql into it and
measures the four shapes (scripts/bench/shape_*.pgb, the same statements pgbench runs in the
bench) with sqlcost's own meter, N calls each, one transaction per call; then stops it.
Writes {operation: {statements, fk_checks, index_entries, heap_*, wal_bytes, cpu_ms}} to OUT.
"""

import argparse
import json
import os
import random
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
import sqlcost  # noqa: E402  (the lead's meter: scripts/bench/sqlcost.py)

SHAPES = ["award", "submit", "claim", "charge"]
GP_OPS = "publish,claim,submit,approve,sweep_award,charge"
VAR = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")
SET = re.compile(r"^\\set\s+(\w+)\s+random\(\s*(-?\d+)\s*,\s*(-?\d+)\s*\)\s*$")


def pgb(path):
    """A pgbench script of scripts/bench/shape_*.pgb: its \\set random() lines and its SQL."""
    sets, sql = [], []
    with open(path) as f:
        for line in f:
            s = line.strip()
            if not s or s.startswith("--"):
                continue
            m = SET.match(s)
            if m:
                sets.append((m.group(1), int(m.group(2)), int(m.group(3))))
            elif s.startswith("\\"):
                sys.exit(f"shapecost: {path}: unsupported meta-command {s}")
            else:
                sql.append(s)
    return sets, " ".join(sql)


def prepare(name, sql):
    """PREPARE text with $n for the :variables (as pgbench -M prepared does), and their order."""
    names = []

    def sub(m):
        if m.group(1) not in names:
            names.append(m.group(1))
        return f"${names.index(m.group(1)) + 1}"
    return f"PREPARE {name} AS {VAR.sub(sub, sql).rstrip(';')}", names


def bind(sets, names, fixed):
    vals = dict(fixed)
    for name, lo, hi in sets:
        vals[name] = random.randint(lo, hi)
    return tuple(vals[n] for n in names)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", required=True)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--dir", default=os.path.join(REPO, "var/bench/sqlcost"))
    ap.add_argument("--json", required=True)
    a = ap.parse_args()
    d = os.path.abspath(a.dir)
    gp_json = os.path.join(d + ".gp.json")
    r = subprocess.run([sys.executable, os.path.join(HERE, "sqlcost.py"), "--bin", a.bin,
                        "--n", str(a.n), "--workers", str(max(6000, 2 * a.n + 100)),
                        "--dir", d, "--keep", "--json", gp_json, "--only", GP_OPS],
                       cwd=REPO, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    svc = os.path.join(REPO, "scripts/services.sh")
    try:
        if r.returncode != 0:
            sys.exit(f"shapecost: sqlcost.py failed:\n{r.stdout[-3000:]}")
        with open(gp_json) as f:
            results = {"gp_" + k: v for k, v in json.load(f).items()}
        env = sqlcost.read_env(d)
        url = env["GRIDPOINTS_DATABASE_ADMIN_URL"]
        sqlcost.sh("psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-v", "workers=100000",
                   "-v", f"assignments={a.n + 10}", "-f", "scripts/bench/shapes.sql", url, env=env)
        import psycopg2
        admin = psycopg2.connect(url)
        admin.autocommit = True
        conn = psycopg2.connect(url)
        meter = sqlcost.Meter(conn, admin)
        for name in SHAPES:
            sets, sql = pgb(os.path.join(HERE, f"shape_{name}.pgb"))
            prep, names = prepare("shape_" + name, sql)
            ex = f"EXECUTE shape_{name}(" + ", ".join(["%s"] * len(names)) + ")" if names \
                else f"EXECUTE shape_{name}"
            calls = [bind(sets, names, {"task": 0}) for _ in range(a.n + 1)]
            with conn.cursor() as c:  # prepared and warmed up, not counted (as pgbench -M prepared)
                c.execute(prep)
                c.execute(ex, calls[0])
                conn.commit()
            meter.start()
            with conn.cursor() as c:
                for q in calls[1:]:
                    c.execute(ex, q)
                    if c.rowcount != (2 if name in ("award", "charge") else 1):
                        sys.exit(f"shapecost: shape {name} wrote {c.rowcount} rows: {q}")
                    conn.commit()
            results["shape_" + name] = meter.stop(a.n)
            print(f"shapecost: shape_{name}: {json.dumps(results['shape_' + name])}",
                  file=sys.stderr)
        conn.close()
        admin.close()
    finally:
        subprocess.run([svc, "stop", d], cwd=REPO, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
    with open(a.json, "w") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
