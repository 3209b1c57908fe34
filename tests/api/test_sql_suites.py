"""The SQL-level suites of tests/sql, each in a fresh database migrated by `gridpointsd
migrate`: they exercise the ledger and work-loop functions directly, including races between
real parallel sessions (dblink, and many psql processes)."""

import os
import subprocess
from pathlib import Path
from urllib.parse import urlparse

import pytest

from gp import unique_name

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def fresh_db(services, sql, cli):
    name = unique_name("sqlsuite").replace("-", "_").lower()
    sql.execute(f"CREATE DATABASE {name}")
    admin = urlparse(services.admin_url)
    url = admin._replace(path="/" + name).geturl()
    cli("migrate", env={"GRIDPOINTS_DATABASE_ADMIN_URL": url})
    env = dict(os.environ, PGHOST=admin.hostname, PGPORT=str(admin.port),
               PGUSER=admin.username or "postgres", PGDATABASE=name)
    yield name, env
    sql.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def run(cmd, env):
    p = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, f"{cmd} failed ({p.returncode}):\n{p.stdout[-4000:]}\n{p.stderr[:1500]}\n...\n{p.stderr[-2500:]}"
    return p.stdout


@pytest.mark.parametrize("suite,done", [("test_ledger.sql", "test_ledger.sql: all checks passed"),
                                        ("test_tasks.sql", "test_tasks: OK")])
def test_sql_suite(fresh_db, suite, done):
    """ON_ERROR_STOP makes the first failed check fatal; the last line proves the script ran
    to its end."""
    name, env = fresh_db
    out = run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", name,
               "-f", f"tests/sql/{suite}"], env)
    assert out.strip().splitlines()[-1] == done, out[-2000:]


def test_ledger_concurrency(fresh_db):
    name, env = fresh_db
    run(["bash", "tests/sql/test_ledger_concurrency.sh", name], env)
