#!/usr/bin/python3
"""scripts/bench/results.py -- the arithmetic of scripts/bench.sh, kept out of bash.

  results.py pgbench-pct LOG...          latency percentiles of pgbench -l logs (3rd field, us):
                                         prints "n=... p50_ms=... p99_ms=... p999_ms=... max_ms=..."
  results.py award-rate POLL N T0        awards/s sustained from the approval poll (lines
                                         "epoch submitted approved"): the slope between 10 % and
                                         90 % of N approved, and the end-to-end rate from T0
  results.py sign-charges KEYS PAYCODES PAYCODE_SECRET AMOUNT OUT
                                         signed POST /merchant/v1/charges requests for gpload
                                         (docs/MERCHANTS.md §2 and §5): KEYS lines "merchant_id
                                         key_id secret", PAYCODES lines "nonce worker_id exp
                                         merchant_index"
  results.py table RESULTS.tsv           the results table (markdown) on stdout
  results.py costs COSTS.json            the per-operation SQL cost table (scripts/bench/
                                         shapecost.py's figures) with issue 12's "before"
  results.py callgrind OUT.N1 OUT.N2 N1 N2
                                         instructions per request from two callgrind dumps of
                                         the same process (N1 and N2 requests after zeroing):
                                         prints "ir_per_req=..."
  results.py history HISTORY.tsv         the history table: lines "path txns ms_per_call
                                         buffers_per_call", one column per data set
  results.py publish RESULTS.md MACHINE.md DOC    writes the machine description and the tables
                                         (results.md, as printed) between the BEGIN/END RESULTS
                                         markers of DOC

RESULTS.tsv: one row per line, tab-separated:
  id  scenario  metric  server  baseline_name  baseline  p50_ms  p99_ms  p999_ms  errors  goal  verdict
  [baseline2_name  baseline2]
(empty fields are "-"; the ratio is server / baseline when both are numbers; the second
baseline, when given, is the pgbench run of our own SQL function, beside the logical shape).
"""

import hashlib
import hmac
import json
import math
import re
import secrets
import sys
import time

BEGIN = "<!-- BEGIN RESULTS (written by scripts/bench.sh; do not edit by hand) -->"
END = "<!-- END RESULTS -->"


def pct(sorted_vals, p):
    if not sorted_vals:
        return float("nan")
    i = max(0, min(len(sorted_vals) - 1, math.ceil(p / 100.0 * len(sorted_vals)) - 1))
    return sorted_vals[i]


def pgbench_pct(paths):
    lat = []
    for path in paths:
        with open(path) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3 and parts[2].isdigit():
                    lat.append(int(parts[2]) / 1000.0)
    lat.sort()
    print("n=%d p50_ms=%.2f p99_ms=%.2f p999_ms=%.2f max_ms=%.2f" % (
        len(lat), pct(lat, 50), pct(lat, 99), pct(lat, 99.9), lat[-1] if lat else float("nan")))


def award_rate(poll, n, t0):
    n, t0 = int(n), float(t0)
    rows = []
    with open(poll) as f:
        for line in f:
            parts = line.split()
            if len(parts) == 3:
                rows.append((float(parts[0]), int(parts[2])))

    def first_at(count):
        for t, a in rows:
            if a >= count:
                return t
        return None

    t10, t90, t100 = first_at(math.ceil(0.1 * n)), first_at(math.ceil(0.9 * n)), first_at(n)
    sustained = (0.8 * n) / (t90 - t10) if t10 is not None and t90 is not None and t90 > t10 else 0
    end_to_end = n / (t100 - t0) if t100 is not None and t100 > t0 else 0
    print("sustained=%.0f end_to_end=%.0f all_s=%.1f" % (
        sustained, end_to_end, (t100 - t0) if t100 is not None else -1))


def sign_charges(keys_path, paycodes_path, paycode_secret, amount, out_path):
    """One signed charge per pay code, each with its own request nonce and Idempotency-Key,
    signed now (the server accepts +-300 s)."""
    with open(keys_path) as f:
        keys = [line.split() for line in f if line.strip()]
    path = "/merchant/v1/charges"
    ts = str(int(time.time()))
    n = 0
    with open(paycodes_path) as f, open(out_path, "w") as out:
        for line in f:
            if not line.strip():
                continue
            nonce, worker, exp, midx = line.split()
            part = f"gpc1.{nonce}.{worker}.{exp}"
            mac = hmac.new(paycode_secret.encode(), part.encode(), hashlib.sha256).hexdigest()[:32]
            body = json.dumps({"paycode": f"{part}.{mac}", "amount": int(amount), "memo": "bench"},
                              separators=(",", ":"))
            _, key_id, secret = keys[int(midx) % len(keys)]
            rnonce = secrets.token_hex(16)
            to_sign = "\n".join(["GP1-HMAC-SHA256", key_id, "POST", path, ts, rnonce,
                                 hashlib.sha256(body.encode()).hexdigest()]) + "\n"
            sig = hmac.new(secret.encode(), to_sign.encode(), hashlib.sha256).hexdigest()
            headers = [f"Authorization: GP1-HMAC-SHA256 key={key_id},ts={ts},nonce={rnonce},sig={sig}",
                       f"Idempotency-Key: bench-{nonce}"]
            out.write("\t".join(["POST", path, "-", body, "\x1f".join(headers)]) + "\n")
            n += 1
    print(f"signed={n}")


def num(s):
    try:
        return float(s)
    except ValueError:
        return None


def fmt(v):
    x = num(v)
    if x is None:
        return v
    if x >= 100:
        return f"{x:,.0f}"
    if x >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def ratio(a, b):
    s, b = num(a), num(b)
    return f"{s / b:.2f}" if s is not None and b not in (None, 0) else "-"


def table(path):
    out = ["| # | scenario | metric | gridpointsd | baseline (logical shape) | value | ratio | "
           "our SQL through pgbench | value | ratio | p50 ms | p99 ms | p99.9 ms | errors | goal | met |",
           "|---|---|---|---:|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---|---|"]
    with open(path) as f:
        rows = [line.rstrip("\n").split("\t") for line in f if line.strip()]
    # In scenario order (6 runs last, as it restarts the server); stable within a scenario.
    rows.sort(key=lambda c: int(re.match(r"\d*", c[0]).group() or 0))
    for c in rows:
        c += ["-"] * (14 - len(c))
        sid, scen, metric, server, bname, bval, p50, p99, p999, errors, goal, verdict = c[:12]
        b2name, b2val = c[12:14]
        out.append("| " + " | ".join([sid, scen, metric, fmt(server), bname, fmt(bval),
                                      ratio(server, bval), b2name, fmt(b2val),
                                      ratio(server, b2val), fmt(p50), fmt(p99), fmt(p999),
                                      errors, goal, verdict]) + " |")
    return "\n".join(out)


# Issue 12's table ("Where it stands", measured on main before the lean write path):
# statements, FK checks, index entries, WAL bytes, PG CPU ms.
BEFORE = {
    "shape_award": ("9", "4", "6", "1,204", "0.27–0.29"),
    "gp_submit": ("35", "9", "16.7", "3,974", "1.27–1.36"),
    "gp_approve": ("50", "10", "30.1", "5,557", "2.34–2.71"),
    "gp_sweep_award": ("27", "6", "23.4", "3,878", "1.03–1.16"),
    "gp_claim": ("23", "6", "10.0", "1,628", "1.78–1.81"),
    "gp_charge": ("40", "5", "17.4", "3,800", "2.13–2.29"),
}
LABEL = {
    "gp_publish": "`gp_task_publish`",
    "gp_claim": "`gp_task_claim`",
    "gp_submit": "`gp_report_submit`",
    "gp_approve": "`gp_report_decide` (approve, pays)",
    "gp_sweep_award": "auto-approval sweep, per award",
    "gp_charge": "`gp_mrc_charge`",
    "shape_award": "minimal award shape",
    "shape_submit": "minimal submission shape",
    "shape_claim": "minimal claim shape",
    "shape_charge": "minimal charge shape",
}
SHAPE_OF = {"gp_claim": "shape_claim", "gp_submit": "shape_submit", "gp_approve": "shape_award",
            "gp_sweep_award": "shape_award", "gp_charge": "shape_charge"}


def costs(path):
    with open(path) as f:
        r = json.load(f)
    n = next(iter(r.values()))["n"] if r else 0
    out = [f"| operation (N = {n}, one transaction each) | statements | FK checks | index entries | "
           "heap ins / upd / HOT / locks | WAL bytes | PG CPU ms | CPU × shape | "
           "before (issue 12): statements / FK / index / WAL / CPU ms |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    order = [k for k in LABEL if k in r] + [k for k in r if k not in LABEL]
    for k in order:
        v = r[k]
        shape = r.get(SHAPE_OF.get(k, ""), None)
        x = f"{v['cpu_ms'] / shape['cpu_ms']:.1f}" if shape and shape["cpu_ms"] > 0 else "-"
        heap = " / ".join(f"{v[h]:.1f}" for h in ("heap_insert", "heap_update",
                                                   "heap_hot_update", "heap_lock"))
        out.append(f"| {LABEL.get(k, k)} | {v['statements']:.1f} | {v['fk_checks']:.1f} | "
                   f"{v['index_entries']:.1f} | {heap} | {v['wal_bytes']:,.0f} | "
                   f"{v['cpu_ms']:.2f} | {x} | {' / '.join(BEFORE.get(k, ('-',)))} |")
    return "\n".join(out)


def callgrind_total(path):
    """The Ir total of a callgrind dump ("summary:" or "totals:" line)."""
    with open(path) as f:
        for line in f:
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1])
    raise SystemExit(f"results.py: no summary in {path}")


def callgrind(p1, p2, n1, n2):
    a, b = callgrind_total(p1), callgrind_total(p2)
    print("ir_per_req=%.0f ir_n1=%d ir_n2=%d" % ((b - a) / (int(n2) - int(n1)), a, b))


HISTORY_PATHS = {"list": "task list near a point (`gp_task_list`)",
                 "statement": "a worker's statement, a full first page of 50 (`gp_statement`)",
                 "claim": "claim (`gp_task_claim`)",
                 "award": "report + approval, paid (`gp_report_submit` + `gp_report_decide`)"}


def history(path):
    data = {}
    with open(path) as f:
        for line in f:
            c = line.split()
            if len(c) == 4:
                data.setdefault(c[0], {})[int(c[1])] = (float(c[2]), float(c[3]))
    sets = sorted({h for v in data.values() for h in v})
    head = "| path | " + " | ".join(f"{h:,} transactions: ms / buffers per call" for h in sets)
    if len(sets) >= 2:
        head += " | buffers, largest ÷ smallest | goal | met |"
    out = [head if len(sets) >= 2 else head + " |",
           "|---|" + "---:|" * len(sets) + ("---:|---|---|" if len(sets) >= 2 else "")]
    for p in [k for k in HISTORY_PATHS if k in data] + [k for k in data if k not in HISTORY_PATHS]:
        v = data[p]
        cells = [f"{v[h][0]:.2f} / {v[h][1]:.0f}" if h in v else "-" for h in sets]
        line = f"| {HISTORY_PATHS.get(p, p)} | " + " | ".join(cells)
        if len(sets) >= 2:
            lo, hi = v.get(sets[0]), v.get(sets[-1])
            r = hi[1] / lo[1] if lo and hi and lo[1] > 0 else None
            line += (f" | {r:.2f}" if r is not None else " | -") + " | same cost (≤ 1.25×) | " + \
                ("yes" if r is not None and r <= 1.25 else "NO")
        out.append(line + " |")
    return "\n".join(out)


def publish(results_md, machine, doc):
    with open(machine) as f:
        mach = f.read().strip()
    with open(results_md) as f:
        tables = f.read().strip()
    block = BEGIN + "\n\n" + mach + "\n\n" + tables + "\n\n" + END
    with open(doc) as f:
        text = f.read()
    if BEGIN in text and END in text:
        text = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda m: block, text,
                      flags=re.S)
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    with open(doc, "w") as f:
        f.write(text)


def main(argv):
    if len(argv) >= 3 and argv[1] == "pgbench-pct":
        pgbench_pct(argv[2:])
    elif len(argv) == 5 and argv[1] == "award-rate":
        award_rate(argv[2], argv[3], argv[4])
    elif len(argv) == 7 and argv[1] == "sign-charges":
        sign_charges(*argv[2:7])
    elif len(argv) == 3 and argv[1] == "table":
        print(table(argv[2]))
    elif len(argv) == 3 and argv[1] == "history":
        print(history(argv[2]))
    elif len(argv) == 3 and argv[1] == "costs":
        print(costs(argv[2]))
    elif len(argv) == 6 and argv[1] == "callgrind":
        callgrind(*argv[2:6])
    elif len(argv) == 5 and argv[1] == "publish":
        publish(argv[2], argv[3], argv[4])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
