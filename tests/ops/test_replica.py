"""A real streaming read replica (pg_basebackup -R of the harness's primary) behind
database.replica_url: replica routes read it while it is fresh (its data differs from the
primary's while its replay is paused), fall back to the primary once it lags more than
database.replica_max_lag, come back when it caught up, and a person's reads right after their
own write go to the primary."""

import re
import time
from urllib.parse import urlparse

import pytest

from conftest import record_figures
from gp import Api
from loop import Tree
from pgcluster import Cluster, basebackup

MAX_LAG_S = 3


def wait_for(pred, timeout=30.0, step=0.1):
    end = time.time() + timeout
    while time.time() < end:
        v = pred()
        if v:
            return v
        time.sleep(step)
    return pred()


@pytest.fixture
def replica(services, migrated, gp_tmp):
    data = basebackup(services.pg_port, gp_tmp / "replica" / "data", "-R")
    c = Cluster(data)
    c.append_conf("hot_standby = on\nhot_standby_feedback = on\n")
    c.start()
    yield c
    c.purge()


def with_port(url, port):
    u = urlparse(url)
    return u._replace(netloc=re.sub(r":\d+$", f":{port}", u.netloc)).geturl()


def statement_amounts(api, token, worker="me"):
    r = api.get(f"/api/v1/workers/{worker}/statement", token=token)
    assert r.status_code == 200, r.text
    return sorted(i["amount"] for i in r.json()["items"])


def replica_reads(srv, since):
    """Request log lines of replica reads after byte offset `since` of the server's log."""
    text = srv.log_path.read_bytes()[since:].decode(errors="replace")
    return [ln for ln in text.splitlines() if "event=request" in ln and "db=replica" in ln]


def log_size(srv):
    return srv.log_path.stat().st_size


def lag_s(primary_sql, replica):
    """Seconds since the replica last replayed a transaction (replica side)."""
    return replica.scalar("SELECT coalesce(extract(epoch FROM now() - "
                          "pg_last_xact_replay_timestamp()), 0)::float")


def test_replica_routing_and_fallback(make_server, make_admin, services, sql, replica):
    srv = make_server(env={
        "GRIDPOINTS_DATABASE_REPLICA_URL": with_port(services.database_url, replica.port),
        "GRIDPOINTS_DATABASE_REPLICA_MAX_LAG": f"{MAX_LAG_S}s",
        "GRIDPOINTS_DATABASE_REPLICA_POLL_INTERVAL": "100ms",
        "GRIDPOINTS_DATABASE_REPLICA_OWN_WRITES_WINDOW": f"{MAX_LAG_S + 1}s",
    })
    api = Api(srv)
    adm = make_admin(srv)
    tree = Tree(api, adm, sql)
    tree.fund(tree.street, 1000)
    (w,) = tree.workers(1)
    wtok, atok = w["token"], adm["token"]

    def adjust(amount):
        r = api.post("/api/v1/adjustments", {"worker_id": w["id"], "amount": amount,
                                             "reason": "replica drill"}, token=atok)
        assert r.status_code == 201, r.text

    def caught_up():
        lsn = sql.scalar("SELECT pg_current_wal_lsn()::text")
        return wait_for(lambda: replica.scalar("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn",
                                               (lsn,)), 10, 0.02)

    adjust(5)
    assert caught_up(), "the replica never replayed the first write"
    # The server sees the replica fresh: statements are read there.
    mark = log_size(srv)
    assert wait_for(lambda: statement_amounts(api, wtok) == [5] and replica_reads(srv, mark), 10)

    # 1. Routing: replay paused, a new write on the primary; the worker (who did not write)
    #    reads the replica's older statement while its lag is within the bound.
    replica.sql("SELECT pg_wal_replay_pause()")
    paused_at = time.monotonic()
    adjust(7)
    mark = log_size(srv)
    assert statement_amounts(api, wtok) == [5], "a replica route did not read the replica"
    assert replica_reads(srv, mark)
    # ... while the admin, who just wrote, reads their own write from the primary.
    mark = log_size(srv)
    assert statement_amounts(api, atok, w["id"]) == [5, 7]
    assert not replica_reads(srv, mark)
    stale_served_for = time.monotonic() - paused_at

    # 2. Fallback: once the replica lags more than replica_max_lag, the primary answers.
    t0 = time.monotonic()
    assert wait_for(lambda: statement_amounts(api, wtok) == [5, 7], MAX_LAG_S + 5, 0.2)
    fallback_after = time.monotonic() - paused_at
    assert fallback_after >= MAX_LAG_S - 0.5, fallback_after
    mark = log_size(srv)
    assert statement_amounts(api, wtok) == [5, 7]
    assert not replica_reads(srv, mark)
    replica_lag = lag_s(sql, replica)
    assert srv.log_text().count("lags more than database.replica_max_lag") >= 1

    # 3. Replay resumed: the replica catches up and serves again.
    replica.sql("SELECT pg_wal_replay_resume()")
    r0 = time.monotonic()
    mark = log_size(srv)
    assert wait_for(lambda: statement_amounts(api, wtok) == [5, 7] and replica_reads(srv, mark),
                    10)
    back_after = time.monotonic() - r0

    # 4. Measured lag of the replica under writes (replay running): how far it trails.
    lags = []
    for i in range(20):
        adjust(1)
        lsn = sql.scalar("SELECT pg_current_wal_lsn()::text")
        s0 = time.monotonic()
        assert wait_for(lambda: replica.scalar(
            "SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (lsn,)), 5, 0.005)
        lags.append((time.monotonic() - s0) * 1000)
    lags.sort()
    record_figures("read_replica", max_lag_s=MAX_LAG_S, poll_interval_ms=100,
                   stale_reads_served_s=round(stale_served_for, 2),
                   fallback_after_pause_s=round(fallback_after, 2),
                   replica_replay_age_at_fallback_s=round(replica_lag, 2),
                   back_on_replica_after_resume_s=round(back_after, 2),
                   replay_lag_ms_median=round(lags[len(lags) // 2], 1),
                   replay_lag_ms_max=round(lags[-1], 1))
    tree.ledger_ok()


def test_replica_down_reads_primary(make_server, make_admin, services, sql, replica):
    srv = make_server(env={
        "GRIDPOINTS_DATABASE_REPLICA_URL": with_port(services.database_url, replica.port),
        "GRIDPOINTS_DATABASE_REPLICA_MAX_LAG": "2s",
        "GRIDPOINTS_DATABASE_REPLICA_POLL_INTERVAL": "100ms",
        "GRIDPOINTS_DATABASE_REPLICA_OWN_WRITES_WINDOW": "2s",
    }, allow_errors=True)
    api = Api(srv)
    adm = make_admin(srv)
    tree = Tree(api, adm, sql)
    (w,) = tree.workers(1)
    mark = log_size(srv)
    assert wait_for(lambda: api.get("/api/v1/workers/me/statement", token=w["token"])
                    .status_code == 200 and replica_reads(srv, mark), 10)
    replica.stop("immediate")
    # Within a few polls the replica counts as down; no read fails meanwhile.
    codes = []
    t0 = time.monotonic()
    while time.monotonic() - t0 < 4:
        codes.append(api.get("/api/v1/workers/me/statement", token=w["token"]).status_code)
        time.sleep(0.05)
    mark = log_size(srv)
    assert api.get("/api/v1/workers/me/statement", token=w["token"]).status_code == 200
    assert not replica_reads(srv, mark)
    assert "read replica not answering" in srv.log_text()
    # Reads sent in the instant between the crash and the next poll still reach the dead
    # replica: their connection fails and they are run again on the primary.
    bad = [c for c in codes if c != 200]
    assert not bad, codes
    retried = srv.log_text().count("the read replica failed this read")
    record_figures("read_replica_down", reads=len(codes), failed=len(bad),
                   retried_on_primary=retried)


def test_own_writes_window_below_max_lag_refused(server_factory, migrated, services):
    """After the window a person's reads rely on the lag bound alone: a window shorter than the
    bound could serve them a replica without their write, so the server does not start."""
    srv = server_factory.new(env={
        "GRIDPOINTS_DATABASE_REPLICA_URL": services.database_url,
        "GRIDPOINTS_DATABASE_REPLICA_MAX_LAG": "10s",
        "GRIDPOINTS_DATABASE_REPLICA_OWN_WRITES_WINDOW": "5s",
    }, start=False, allow_errors=True)
    srv.start(wait=False)
    assert srv.wait_exit(20) == 1
    assert "replica_own_writes_window must be at least database.replica_max_lag" in srv.log_text()


def test_primary_as_replica_is_never_used(make_server, make_admin, services):
    """A replica_url that points at a primary (pg_last_wal_replay_lsn() is NULL) is reported and
    never read: every read goes to the primary."""
    srv = make_server(env={"GRIDPOINTS_DATABASE_REPLICA_URL": services.database_url,
                           "GRIDPOINTS_DATABASE_REPLICA_POLL_INTERVAL": "100ms"})
    adm = make_admin(srv)
    api = Api(srv)
    time.sleep(0.5)
    mark = log_size(srv)
    r = api.get(f"/api/v1/workers/{adm['person_id']}/statement", token=adm["token"])
    assert r.status_code in (200, 404), r.text
    assert not replica_reads(srv, mark)
    assert "is not a replica in recovery" in srv.log_text()
