"""sql/ in two parts (issue 11): numbered migrations that are history, and function modules that
`gridpointsd migrate` re-creates on every run.

- A database built by the previous main (the released migrations 0001..0011, applied the way
  its `migrate` applied them, with data written through the functions of that time) upgrades
  with one `migrate` and no manual step; the server then serves a whole work loop on it, for
  the tasks of before and for new ones; a second `migrate` changes nothing but the functions.
- The server refuses a database whose migration version or function hash is not its own.
- `migrate` refuses function files this build was not made with, and a schema gp that holds
  anything but its functions.
Each test has its own database (and Redis db 8), so that nothing leaks into the session's."""

import datetime as dt
import hashlib
import json
import shutil
from urllib.parse import urlparse

import psycopg2
import pytest

from gp import Api, REPO, Sql, kv, unique_name, unique_phone
from loop import Tree, iso, new_token, now, report_body

# The released migrations, byte for byte: databases everywhere have applied them, so they are
# never edited (a fix is a new migration, or an ordinary edit of sql/functions).
RELEASED = {
    "0001_foundation.sql": "e15d732d3bf15260d91175e0f007c9d424aa182058b94ced48966d418a109350",
    "0002_org_people.sql": "12d67fb6705bdea1d899edb59cff85aa11fc914f445bebb799828371190a0dd3",
    "0003_ledger.sql": "b5f732f445ba8e01d7f5a6b212c666b3d590869cc7ef26bda1b681a8445a6e8c",
    "0004_tasks.sql": "5012a658fc48fda160e31f72236949ee33d3ab8d6a779268c843ae838a3514b7",
    "0005_merchants.sql": "579befc42cc715b8ee1fe5a9b65f9defe1976169a9becde7d733eed846d1f6e8",
    "0006_audit.sql": "c74d89db67d21e804d2dc972cea9e2db82b082963694f033f4244efd760335b8",
    "0007_audit_due.sql": "7e000a90b79520dfc118874dbc7962cd0be95eb04b789bc51007f70d26226dcb",
    "0008_worker_accounts_index.sql": "6194a712bf4f62e218bac5e70bed66f714bc941c0890f345bcbb59972e576a30",
    "0009_sweep_empty_moves.sql": "5a74bfd5e89b54672a2917c38669735be9751434c23d060f3ddebfb4eacbbfe8",
    "0010_suspend_drops_cached_sessions.sql": "c3a72294fde8fd7ef8756fbb3f3cba713ddf54fc0509c6d1fd992a4ee756a2da",
    "0011_scope_before_gate.sql": "65d83c7337cb7e2f1747d94e61ab044f81ff90d1a344df4d895db289876503a7",
}
MIGRATIONS = REPO / "sql" / "migrations"
FUNCTIONS = REPO / "sql" / "functions"
# The migration version this tree (and so the binary built from it) needs.
# Numbers may have gaps while branches that claimed numbers are merged one by one.
VERSIONS = sorted(int(f.name[:4]) for f in MIGRATIONS.glob("[0-9][0-9][0-9][0-9]_*.sql"))
LAST = VERSIONS[-1]
NEW_SINCE_11 = sum(v > 11 for v in VERSIONS)
# What 0012 leaves in public: trigger functions, the view's helpers and what these call.
KEPT_IN_PUBLIC = {"gp_accounts_immutable", "gp_append_only", "gp_audit_jobj", "gp_audit_jstr",
                  "gp_audit_ts", "gp_ledger_txn_balanced", "gp_level_below", "gp_raise",
                  "org_units_before_insert", "org_units_no_move"}


def functions_hash(directory):
    """The hash scripts/sql-build-header.sh and `migrate` compute (name NUL size NUL bytes)."""
    h = hashlib.sha256()
    for f in sorted(directory.glob("*.sql")):
        data = f.read_bytes()
        h.update(f.name.encode() + b"\0" + str(len(data)).encode() + b"\0" + data)
    return h.hexdigest()


class Db:
    """A database of its own, with the URLs and env of a deployment on it."""

    def __init__(self, services):
        self.name = unique_name("upg").replace("-", "_").lower()
        root = Sql(services.admin_url)
        root.execute(f"CREATE DATABASE {self.name}")
        root.close()
        self.services = services
        self.admin_url = urlparse(services.admin_url)._replace(path="/" + self.name).geturl()
        self.app_url = urlparse(services.database_url)._replace(path="/" + self.name).geturl()
        self.redis_url = urlparse(services.redis_url)._replace(path="/8").geturl()
        with kv.connect(self.redis_url) as r:
            r.flushdb()  # balances and claim gates of an earlier test's database
        self.env = {"GRIDPOINTS_DATABASE_URL": self.app_url,
                    "GRIDPOINTS_DATABASE_ADMIN_URL": self.admin_url,
                    "GRIDPOINTS_REDIS_URL": self.redis_url}
        self.sql = Sql(self.admin_url)  # search_path gp, public

    def drop(self):
        self.sql.close()
        root = Sql(self.services.admin_url)
        root.execute(f"DROP DATABASE IF EXISTS {self.name} WITH (FORCE)")
        root.close()

    def functions(self, schema):
        return {r[0] for r in self.sql("SELECT p.proname FROM pg_proc p JOIN pg_namespace n "
                                       "ON n.oid = p.pronamespace WHERE n.nspname = %s", (schema,))}


@pytest.fixture
def db(services):
    d = Db(services)
    yield d
    d.drop()


def build_like_previous_main(db):
    """The released migrations applied as the previous `gridpointsd migrate` applied them
    (server/cli.c of that time): schema_migrations first, then each file in its own
    transaction with its row, on a connection with the default search_path."""
    conn = psycopg2.connect(db.admin_url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version int PRIMARY KEY, "
                    "name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())")
        for name in sorted(RELEASED):
            cur.execute("BEGIN")
            cur.execute((MIGRATIONS / name).read_text())
            cur.execute("INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                        (int(name[:4]), name))
            cur.execute("COMMIT")
    return conn


def seed_before(conn):
    """Data written through the previous main's functions (in public): a street with its
    admin, a community and a grid with budgets, grid staff, a worker, a published task and a
    claim. Returns the ids and tokens."""
    cur = conn.cursor()

    def one(q, params=None):
        cur.execute(q, params)
        return cur.fetchone()[0]

    def person(unit, role):
        tok = new_token()
        pid = one("WITH p AS (INSERT INTO persons (phone, name, unit_id, password_hash) "
                  "VALUES (%s, %s, %s, 'pbkdf2-sha256$1000$AA==$AA==') RETURNING id), "
                  "g AS (INSERT INTO role_grants (person_id, role, unit_id) "
                  "      SELECT id, %s, %s FROM p RETURNING person_id) "
                  "INSERT INTO sessions (token_hash, person_id, expires_at) "
                  "SELECT %s, person_id, now() + interval '1 day' FROM g RETURNING person_id",
                  (unique_phone(), unique_name("p"), unit, role, unit,
                   hashlib.sha256(tok.encode()).digest()))
        return {"id": pid, "person_id": pid, "token": tok, "unit_id": unit}

    street = one("INSERT INTO org_units (level, name) VALUES ('street', %s) RETURNING id",
                 (unique_name("street"),))
    admin = person(street, "street_admin")
    community = one("SELECT (gp_unit_create(%s, %s, 'c') ->> 'id')::bigint", (admin["id"], street))
    grid = one("SELECT (gp_unit_create(%s, %s, 'g') ->> 'id')::bigint", (admin["id"], community))
    micro = one("SELECT (gp_unit_create(%s, %s, 'm') ->> 'id')::bigint", (admin["id"], grid))
    one("SELECT gp_issue(%s, %s, 100000, 'before the upgrade')", (admin["id"], street))
    one("SELECT gp_grant(%s, %s, %s, 50000, 'c')", (admin["id"], street, community))
    one("SELECT gp_grant(%s, %s, %s, 20000, 'g')", (admin["id"], community, grid))
    staff = person(grid, "grid_staff")
    worker = person(micro, "worker")
    task = one("SELECT gp_task_publish(%s, %s::jsonb)", (staff["id"], json.dumps({
        "unit_id": grid, "title": "before the upgrade", "category": "patrol", "reward": 15,
        "slots": 2, "ends_at": iso(now() + dt.timedelta(hours=2)), "claim_ttl_s": 3600,
        "review_window_s": 3600, "lat": 30.6570, "lng": 104.0800, "geofence_m": 500})))
    claim = one("SELECT gp_task_claim(%s, %s)", (worker["id"], task["id"]))
    cur.close()
    return {"street": street, "community": community, "grid": grid, "micro": micro,
            "admin": admin, "staff": staff, "worker": worker, "task": task, "claim": claim}


def test_released_migrations_are_unchanged():
    have = {f.name: hashlib.sha256(f.read_bytes()).hexdigest()
            for f in MIGRATIONS.glob("*.sql") if f.name in RELEASED}
    assert have == RELEASED


def test_upgrade_from_the_previous_main(db, cli, make_server):
    conn = build_like_previous_main(db)
    before = seed_before(conn)
    conn.close()
    assert "gp_task_claim" in db.functions("public") and not db.functions("gp")

    # The server of this build refuses the old database and says what to do.
    srv = make_server(start=False, allow_errors=True, env=db.env)
    srv.start(wait=False)
    assert srv.wait_exit(timeout=20) == 1
    assert f"version 11 but this build needs {LAST}" in srv.log_text()
    assert "run `gridpointsd migrate`" in srv.log_text()

    p = cli("migrate", env=db.env)
    assert "applied migration 0012_functions_schema.sql" in p.stderr
    assert f"({NEW_SINCE_11} migration{'' if NEW_SINCE_11 == 1 else 's'} applied now)" in p.stderr
    assert db.sql("SELECT version FROM schema_migrations ORDER BY 1") == [(v,) for v in VERSIONS]
    assert db.sql.scalar("SELECT hash FROM schema_functions") == functions_hash(FUNCTIONS)
    # Nothing stale left to call: public keeps only what tables and the view need.
    # (later migrations may add trigger functions of their own)
    in_public = {f for f in db.functions("public") if f.startswith(("gp_", "org_units_"))}
    gp_fns = db.functions("gp")
    assert KEPT_IN_PUBLIC <= in_public and not in_public & gp_fns
    assert db.sql("SELECT proname FROM pg_proc WHERE pronamespace = 'public'::regnamespace "
                  "AND proname LIKE 'gp\\_%%' AND prorettype <> 'trigger'::regtype "
                  "AND NOT proname = ANY (%s)", (sorted(KEPT_IN_PUBLIC),)) == []
    assert len(gp_fns) > 200
    assert {"gp_task_claim", "gp_issue", "gp_page", "gp_audit_seal"} <= gp_fns
    # SECURITY DEFINER functions pin their search_path; the app role keeps exactly its grants.
    assert db.sql("SELECT p.proname FROM pg_proc p WHERE p.prosecdef AND NOT "
                  "('search_path=gp, public, pg_temp' = ANY (coalesce(p.proconfig, '{}')))") == []
    assert db.sql.scalar("SELECT has_function_privilege('gp_app', 'gp.gp_lot_put(bigint, bigint, "
                         "bigint, timestamptz, timestamptz, bigint)', 'EXECUTE')") is False
    assert db.sql.scalar("SELECT has_function_privilege('gp_app', 'gp.gp_task_award(bigint, "
                         "bigint, bigint, bigint, bigint)', 'EXECUTE')") is True

    # The whole work loop on the upgraded database: the claim of before, then a new task.
    srv = make_server(env=db.env)
    api = Api(srv)
    worker, staff = before["worker"], before["staff"]
    a = before["claim"]
    r = api.post("/api/v1/reports", report_body(a["id"]), token=worker["token"])
    assert r.status_code == 201, r.text
    r = api.post(f"/api/v1/assignments/{a['id']}/approve", {}, token=staff["token"])
    assert r.status_code == 200, r.text
    tree = Tree(api, before["admin"], db.sql)  # the admin's session of before, new units
    task = tree.publish(slots=1, reward=20)
    (w2,) = tree.workers(1)
    r = api.post(f"/api/v1/tasks/{task['id']}/claim", token=w2["token"])
    assert r.status_code == 201, r.text
    r = api.post("/api/v1/reports", report_body(r.json()["id"]), token=w2["token"])
    assert r.status_code == 201, r.text
    r = api.post(f"/api/v1/assignments/{r.json()['assignment']['id']}/approve", {},
                 token=tree.staff["token"])
    assert r.status_code == 200, r.text
    assert tree.balance(worker["id"]) == 15 and tree.balance(w2["id"]) == 20
    tree.ledger_ok()
    api.close()
    srv.stop()

    # A second migrate: no migration, the functions re-created (new oids), same hash, same data.
    oid = db.sql.scalar("SELECT 'gp.gp_task_claim'::regproc::oid")
    applied = db.sql("SELECT version, applied_at FROM schema_migrations ORDER BY 1")
    txns = db.sql.scalar("SELECT count(*) FROM ledger_txns")
    p = cli("migrate", env=db.env)
    assert "0 migrations applied now" in p.stderr
    assert db.sql.scalar("SELECT 'gp.gp_task_claim'::regproc::oid") != oid
    assert db.sql("SELECT version, applied_at FROM schema_migrations ORDER BY 1") == applied
    assert db.sql.scalar("SELECT hash FROM schema_functions") == functions_hash(FUNCTIONS)
    assert db.sql.scalar("SELECT count(*) FROM ledger_txns") == txns
    srv = make_server(env=db.env)
    assert Api(srv).get("/readyz").status_code == 200
    srv.stop()


@pytest.mark.parametrize("tamper,says", [
    ("UPDATE schema_functions SET hash = repeat('0', 64)",
     "SQL functions with hash 000000000000 but this build needs"),
    ("DELETE FROM schema_functions", "SQL functions with hash (none)"),
    (f"DELETE FROM schema_migrations WHERE version = {LAST}",
     f"version {VERSIONS[-2]} but this build needs {LAST}"),
    ("INSERT INTO schema_migrations (version, name) VALUES (9999, '9999_future.sql')",
     f"version 9999 but this build needs {LAST}"),
])
def test_server_refuses_a_database_that_is_not_its_own(db, cli, make_server, tamper, says):
    cli("migrate", env=db.env)
    db.sql.execute(tamper)
    srv = make_server(start=False, allow_errors=True, env=db.env)
    srv.start(wait=False)
    assert srv.wait_exit(timeout=20) == 1
    log = srv.log_text()
    assert says in log and "run `gridpointsd migrate`" in log, log[-2000:]


def copy_sql(tmp_path):
    d = tmp_path / "sql"
    shutil.copytree(REPO / "sql", d)
    return d


def test_migrate_refuses_function_files_of_another_build(db, cli, tmp_path):
    cli("migrate", env=db.env)
    loaded = db.sql.scalar("SELECT loaded_at FROM schema_functions")
    d = copy_sql(tmp_path)
    f = d / "functions" / "40_tasks.sql"
    f.write_text(f.read_text() + "\n-- edited after the build\n")
    p = cli("migrate", env=dict(db.env, GRIDPOINTS_DATABASE_SQL_DIR=str(d)), check=False)
    assert p.returncode == 1 and "not the ones this build was made with" in p.stderr
    assert db.sql.scalar("SELECT loaded_at FROM schema_functions") == loaded


@pytest.mark.parametrize("name", ["1_x.sql", "40_Tasks.sql", "40-x.sql", "x.sql"])
def test_migrate_refuses_a_badly_named_function_file(db, cli, tmp_path, name):
    d = copy_sql(tmp_path)
    (d / "functions" / name).write_text("SELECT 1;\n")
    p = cli("migrate", env=dict(db.env, GRIDPOINTS_DATABASE_SQL_DIR=str(d)), check=False)
    assert p.returncode == 1 and name in p.stderr and "NN_name.sql" in p.stderr
    assert db.sql.scalar("SELECT to_regclass('schema_migrations')") is None


def test_migrate_refuses_migrations_of_another_build(db, cli, tmp_path):
    d = copy_sql(tmp_path)
    later = d / "migrations" / f"{LAST + 1:04d}_later.sql"
    later.write_text("CREATE TABLE must_not_exist (x int);\n")
    p = cli("migrate", env=dict(db.env, GRIDPOINTS_DATABASE_SQL_DIR=str(d)), check=False)
    assert p.returncode == 1
    assert f"ends at migration {LAST + 1:04d} but this build was made with {LAST:04d}" in p.stderr
    assert db.sql.scalar("SELECT to_regclass('schema_migrations')") is None


def test_migrate_drops_nothing_but_the_functions(db, cli):
    """DROP SCHEMA gp CASCADE would take along whatever depends on a function in it: migrate
    refuses instead, names the object and changes nothing."""
    cli("migrate", env=db.env)
    db.sql.execute("CREATE VIEW public.slots_view AS SELECT gp_task_free_slots(t) FROM tasks t")
    db.sql.execute("CREATE TABLE gp.stray (x int)")
    # A type in gp is what the function files may create too; a column outside using it is not.
    db.sql.execute("CREATE TYPE gp.stray_t AS (x int)")
    db.sql.execute("CREATE TABLE public.uses_t (v gp.stray_t)")
    oid = db.sql.scalar("SELECT 'gp.gp_task_claim'::regproc::oid")
    p = cli("migrate", env=db.env, check=False)
    assert p.returncode == 1
    assert "view slots_view depends on function gp_task_free_slots" in p.stderr
    assert "table stray depends on schema gp" in p.stderr
    assert "column v of table uses_t depends on type stray_t" in p.stderr
    assert "nothing was changed" in p.stderr
    assert db.sql.scalar("SELECT to_regclass('public.slots_view')") is not None
    assert db.sql.scalar("SELECT 'gp.gp_task_claim'::regproc::oid") == oid
    db.sql.execute("DROP VIEW public.slots_view")
    db.sql.execute("DROP TABLE gp.stray")
    db.sql.execute("DROP TABLE public.uses_t")
    cli("migrate", env=db.env)  # the type alone goes with the schema
    assert db.sql.scalar("SELECT to_regtype('gp.stray_t')") is None


def test_a_failed_migrate_changes_nothing(db, cli, tmp_path):
    """One transaction: a migration that fails leaves neither earlier migrations of the run
    nor dropped functions behind."""
    d = copy_sql(tmp_path)
    (d / "migrations" / "0012_functions_schema.sql").write_text(
        (d / "migrations" / "0012_functions_schema.sql").read_text() + "SELECT 1/0;\n")
    p = cli("migrate", env=dict(db.env, GRIDPOINTS_DATABASE_SQL_DIR=str(d)), check=False)
    assert p.returncode == 1 and "division by zero" in p.stderr
    assert db.sql.scalar("SELECT count(*) FROM schema_migrations") == 0
    assert db.sql.scalar("SELECT to_regclass('org_units')") is None
