"""Extra PostgreSQL 15 clusters for the operations drills: a streaming replica made with
pg_basebackup, a primary with WAL archiving, a restore from a base backup. Like
scripts/services.sh they listen on loopback only, and run as the `gridpoints` system user when
we are root (PostgreSQL refuses root)."""

import os
import pwd
import shutil
import subprocess
from pathlib import Path

import psycopg2

from gp import free_port

PGBIN = Path(os.environ.get("GP_PGBIN", "/usr/lib/postgresql/15/bin"))
PG_OS_USER = "gridpoints"


def as_pg(*cmd, check=True, timeout=180):
    """Runs a PostgreSQL program as the cluster owner; returns the CompletedProcess."""
    full = [str(c) for c in cmd]
    if os.geteuid() == 0:
        full = ["runuser", "-u", PG_OS_USER, "--"] + full
    p = subprocess.run(full, cwd="/", stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(full)} failed ({p.returncode}):\n{p.stdout}{p.stderr}")
    return p


def make_dir(path, mode=0o700):
    """A directory owned by the cluster owner."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(mode)
    if os.geteuid() == 0:
        pw = pwd.getpwnam(PG_OS_USER)
        os.chown(path, pw.pw_uid, pw.pw_gid)
    return path


class Cluster:
    """One PostgreSQL data directory on its own port: .start(), .stop(mode), .sql(q),
    .url(user, db)."""

    def __init__(self, data, port=None):
        self.data = Path(data)
        self.port = port or free_port()
        self.log = self.data.parent / f"{self.data.name}.log"

    @classmethod
    def initdb(cls, data, extra_conf=""):
        make_dir(data.parent, 0o755)
        c = cls(data)
        as_pg(PGBIN / "initdb", "-D", data, "--auth=trust", "-U", "postgres",
              "--data-checksums", "--encoding=UTF8", "--locale=C.UTF-8")
        c.append_conf("listen_addresses = '127.0.0.1'\nunix_socket_directories = ''\n"
                      "max_connections = 100\n" + extra_conf)
        return c

    def append_conf(self, text):
        conf = self.data / "postgresql.auto.conf"
        # postgresql.auto.conf is read last: settings here win over postgresql.conf.
        with open(conf, "a") as f:
            f.write("\n" + text + "\n")

    def start(self):
        if not self.log.exists():
            self.log.touch()
            if os.geteuid() == 0:
                pw = pwd.getpwnam(PG_OS_USER)
                os.chown(self.log, pw.pw_uid, pw.pw_gid)
        as_pg(PGBIN / "pg_ctl", "-D", self.data, "-l", self.log, "-w", "-t", "120",
              "-o", f"-p {self.port} -c unix_socket_directories='' "
                    "-c listen_addresses='127.0.0.1'", "start")
        return self

    def stop(self, mode="fast", check=True):
        return as_pg(PGBIN / "pg_ctl", "-D", self.data, "-m", mode, "-w", "-t", "60", "stop",
                     check=check)

    def running(self):
        return (self.data / "postmaster.pid").exists()

    def url(self, user="postgres", db="gridpoints"):
        return f"postgresql://{user}@127.0.0.1:{self.port}/{db}"

    def sql(self, q, params=None, db="gridpoints"):
        conn = psycopg2.connect(self.url(db=db))
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute(q, params)
                return cur.fetchall() if cur.description else None
        finally:
            conn.close()

    def scalar(self, q, params=None, db="gridpoints"):
        rows = self.sql(q, params, db)
        return rows[0][0] if rows else None

    def purge(self):
        if self.running():
            self.stop("immediate", check=False)
        shutil.rmtree(self.data, ignore_errors=True)


def basebackup(source_port, data, *extra):
    """pg_basebackup of the cluster on source_port into data (WAL streamed alongside)."""
    make_dir(data.parent, 0o755)
    as_pg(PGBIN / "pg_basebackup", "-h", "127.0.0.1", "-p", source_port, "-U", "postgres",
          "-D", data, "-X", "stream", "--checkpoint=fast", *extra)
    return data
