"""/metrics as an operator's Prometheus reads it: `promtool check metrics` on a live server
after some traffic, the names and labels the dashboard and the alerting rules use, and
`promtool check rules` / `promtool test rules` on deploy/prometheus/."""

import json
import pathlib
import re
import shutil
import subprocess
import time

import psycopg2
import pytest

from gp import settings, unique_name, unique_phone

ROOT = pathlib.Path(__file__).resolve().parents[2]
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool missing: scripts/deps.sh installs Debian's prometheus")


def scrape(api):
    r = api.get("/metrics")
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return r.text


def samples(text):
    """{(name, frozenset(labels)): value} of the exposition text."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.fullmatch(r'([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)', line)
        assert m, line
        labels = frozenset(re.findall(r'([a-z_]+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        out[(m.group(1), labels)] = float(m.group(3))
    return out


def value(text, name, **labels):
    want = frozenset(labels.items())
    got = [v for (n, ls), v in samples(text).items() if n == name and want <= ls]
    assert got, f"no sample {name}{labels}"
    return sum(got)


def some_traffic(api, admin):
    """A mix of routes and outcomes: health, matched and unmatched paths, 4xx, writes."""
    for _ in range(20):
        assert api.get("/healthz").status_code == 200
    assert api.get("/readyz").status_code == 200
    assert api.get("/no/such/route").status_code == 404
    assert api.get("/api/v1/nope").status_code == 404
    assert api.put("/api/v1/me", {}, token=admin["token"]).status_code == 405
    assert api.get("/api/v1/me", token=admin["token"]).status_code == 200
    assert api.get("/api/v1/me").status_code == 401
    body = {"phone": unique_phone(), "name": unique_name("m"), "unit_id": admin["unit_id"],
            "roles": [{"role": "worker"}]}
    assert api.post("/api/v1/people", body, token=admin["token"]).status_code == 201


@needs_promtool
def test_promtool_accepts_live_metrics(api, admin):
    some_traffic(api, admin)
    text = scrape(api)
    p = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0 and not p.stdout.strip() and not p.stderr.strip(), \
        p.stdout + p.stderr


def test_every_metric_has_help_and_type(api, admin):
    some_traffic(api, admin)
    text = scrape(api)
    helped = set(re.findall(r"^# HELP (\S+) \S", text, re.M))
    typed = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))
    assert helped == set(typed), helped ^ set(typed)
    for (name, _labels) in samples(text):
        family = re.sub(r"_(bucket|sum|count)$", "", name) \
            if typed.get(re.sub(r"_(bucket|sum|count)$", "", name)) == "histogram" else name
        assert family in typed, f"{name} has no TYPE"
        if typed[family] == "counter":
            assert family.endswith("_total"), family
    # one metric per kind of event: the old catch-all is gone
    assert "gridpoints_events_total" not in text


def test_build_info_names_the_sql_it_runs(api, sql):
    text = scrape(api)
    build = [ls for (n, ls), v in samples(text).items() if n == "gridpoints_build_info" and v == 1]
    assert len(build) == 1, build
    labels = dict(build[0])
    assert re.fullmatch(r"\d+\.\d+\.\d+", labels["version"])
    assert sql.scalar("SELECT hash FROM schema_functions").startswith(labels["sql_hash"])
    assert int(labels["migration"]) == sql.scalar("SELECT max(version) FROM schema_migrations")
    v = subprocess.run([str(settings.GRIDPOINTS_BIN), "--version"], capture_output=True,
                       text=True, timeout=30)
    assert labels["version"] in v.stdout, v.stdout + v.stderr


def test_unmatched_requests_are_labelled_and_latency_has_microseconds(api):
    before = scrape(api)
    n0 = sum(v for (n, ls), v in samples(before).items()
             if n == "gridpoints_http_requests_total" and ("route", "unmatched") in ls
             and ("status", "404") in ls and ("method", "GET") in ls)
    for i in range(5):
        assert api.get(f"/definitely/not/a/route/{i}").status_code == 404
    for _ in range(30):
        assert api.get("/healthz").status_code == 200
    text = scrape(api)
    n1 = value(text, "gridpoints_http_requests_total", route="unmatched", status="404",
               method="GET")
    assert n1 - n0 == 5
    assert api.put("/healthz", {}).status_code == 405
    assert value(scrape(api), "gridpoints_http_requests_total", route="unmatched", status="405",
                 method="PUT") >= 1
    # raw paths never become labels
    assert "/definitely/not" not in text
    # buckets below one millisecond, in seconds
    les = {dict(ls)["le"] for (n, ls) in samples(text)
           if n == "gridpoints_http_request_duration_seconds_bucket"}
    assert {"0.000100", "0.000250", "0.000500", "0.001000"} <= les, sorted(les)
    # durations are kept in microseconds: the sums of every route are not all whole
    # milliseconds (they all were when latency was measured in milliseconds)
    sums = [v for (n, ls), v in samples(text).items()
            if n == "gridpoints_http_request_duration_seconds_sum"]
    assert any(round(s * 1e6) % 1000 for s in sums), sums
    count = value(text, "gridpoints_http_request_duration_seconds_count", route="/healthz")
    assert count >= 30
    # a health check is fast: most land at or below 10 ms even under ASan
    fast = value(text, "gridpoints_http_request_duration_seconds_bucket", route="/healthz",
                 le="0.010000")
    assert fast >= count / 2


def wait_metric(api, name, pred, timeout=10, **labels):
    deadline = time.monotonic() + timeout
    while True:
        text = scrape(api)
        try:
            v = value(text, name, **labels)
        except AssertionError:
            v = None
        if v is not None and pred(v):
            return v
        assert time.monotonic() < deadline, f"{name}{labels} = {v}"
        time.sleep(0.2)


def test_database_gauges_and_sweeps(api, sql):
    # the janitor's sweeps report how they run; the ops gauges come from gp_ops_gauges
    now = time.time()
    wait_metric(api, "gridpoints_ops_gauges_timestamp_seconds", lambda v: v >= now - 1)
    wait_metric(api, "gridpoints_sweep_last_success_timestamp_seconds",
                lambda v: v >= now - 1, sweep="timers")
    text = scrape(api)
    assert value(text, "gridpoints_sweep_runs_total", sweep="timers", result="ok") > 0
    assert value(text, "gridpoints_timer_lag_seconds") < 5
    assert value(text, "gridpoints_audit_alarm") == 0
    for timer in ("claims_expired", "reports_auto_approved", "tasks_closed", "points_vested",
                  "vouchers_expired"):
        assert value(text, "gridpoints_timer_events_total", timer=timer) >= 0


def test_timer_lag_reads_the_most_overdue_timer(services, migrated):
    """gp_ops_gauges sees a lot of points that should have expired 90 s ago (inserted in a
    transaction the sweeps cannot see, then rolled back)."""
    conn = psycopg2.connect(services.admin_url, options="-c search_path=gp,public")
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT (gp_ops_gauges() ->> 'timer_lag_seconds')::float")
            assert cur.fetchone()[0] < 5
            cur.execute("INSERT INTO ledger_txns (kind) VALUES ('issue') RETURNING id")
            txn = cur.fetchone()[0]
            cur.execute("""INSERT INTO point_lots (worker_id, earned_txn_id, amount, remaining,
                                                   earned_at, expires_at)
                           VALUES (-1, %s, 1, 1, now() - interval '1 day',
                                   now() - interval '90 seconds')""", (txn,))
            cur.execute("SELECT gp_ops_gauges()")
            g = cur.fetchone()[0]
    finally:
        conn.rollback()
        conn.close()
    assert 89 <= g["timer_lag_seconds"] < 200, g


@needs_promtool
def test_alerting_rules_check_and_test():
    rules = ROOT / "deploy/prometheus/alerts.yml"
    p = subprocess.run([PROMTOOL, "check", "rules", str(rules)], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    tests = ROOT / "deploy/prometheus/alerts_test.yml"
    p = subprocess.run([PROMTOOL, "test", "rules", str(tests)], capture_output=True, text=True,
                       timeout=60, cwd=tests.parent)
    assert p.returncode == 0, p.stdout + p.stderr


def test_dashboard_queries_name_metrics_we_export(api, admin):
    """Every gridpoints_* name in the Grafana dashboard and the alerting rules exists at
    /metrics (a renamed metric would leave an empty panel or a silent alert)."""
    some_traffic(api, admin)
    text = scrape(api)
    typed = set(re.findall(r"^# TYPE (\S+) ", text, re.M))
    exported = set(typed)
    for t in typed:
        exported |= {t + "_bucket", t + "_sum", t + "_count"}
    dash = json.loads((ROOT / "deploy/grafana/gridpoints.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    assert exprs
    exprs.append((ROOT / "deploy/prometheus/alerts.yml").read_text())
    used = set()
    for e in exprs:
        used |= set(re.findall(r"\bgridpoints_[a-z_]+", e))
    missing = used - exported
    assert not missing, missing


@needs_promtool
def test_dashboard_queries_parse(tmp_path):
    """Each panel's query is valid PromQL: promtool checks them as recording rules (with
    Grafana's variables replaced by what Grafana would put there)."""
    dash = json.loads((ROOT / "deploy/grafana/gridpoints.json").read_text())
    rules = []
    for p in dash["panels"]:
        for t in p.get("targets", []):
            e = t["expr"].replace("$__rate_interval", "5m").replace("$instance", ".*")
            rules.append({"record": f"panel_{p['id']}_{t['refId']}", "expr": e})
    f = tmp_path / "dash.rules.yml"
    f.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}))
    r = subprocess.run([PROMTOOL, "check", "rules", str(f)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
