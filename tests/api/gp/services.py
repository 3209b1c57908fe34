"""The PostgreSQL + Redis that a test session's servers use (scripts/services.sh)."""

import os
import subprocess
from urllib.parse import urlparse

import pytest

from gp.settings import SERVICES_SH

_URL_KEYS = ("GRIDPOINTS_DATABASE_URL", "GRIDPOINTS_DATABASE_ADMIN_URL", "GRIDPOINTS_REDIS_URL")


class Services:
    """The PostgreSQL + Redis that servers of this session use.

    .database_url (gp_app), .admin_url (superuser), .redis_url, .pg_port, .redis_port, .dir
    (None for an external deployment), .env() the GRIDPOINTS_* overrides for them.

    For outage and durability tests: .stop_postgres(mode="fast"|"immediate"),
    .stop_redis(), .start() (brings back whatever is down, on the same ports). Whatever a
    test leaves stopped is started again after it (conftest's _restore_services)."""

    def __init__(self, database_url, admin_url, redis_url, directory=None):
        self.database_url = database_url
        self.admin_url = admin_url
        self.redis_url = redis_url
        self.dir = directory
        self.pg_port = urlparse(admin_url).port if admin_url else None
        self.redis_port = urlparse(redis_url).port if redis_url else None
        self.running = directory is not None
        self.degraded = False  # a test stopped one of them

    def env(self):
        pairs = dict(zip(_URL_KEYS, (self.database_url, self.admin_url, self.redis_url)))
        return {k: v for k, v in pairs.items() if v}

    @classmethod
    def from_environment(cls):
        return cls(*(os.environ.get(k) for k in _URL_KEYS))

    @classmethod
    def launch(cls, directory):
        _services_sh("start", directory)
        return cls(*_read_env_file(directory), directory)

    def _own(self):
        if self.dir is None:
            pytest.skip("needs the harness's own PostgreSQL and Redis (GRIDPOINTS_TEST_URL is set)")

    def stop_postgres(self, mode="fast"):
        """Stops PostgreSQL; mode "immediate" is a crash (recovery at the next start)."""
        self._own()
        self.degraded = True
        _services_sh("stop-pg", self.dir, mode)

    def stop_redis(self):
        """Stops Redis (no persistence: it comes back empty)."""
        self._own()
        self.degraded = True
        _services_sh("stop-redis", self.dir)

    def start(self):
        """Starts whatever is down, on the same ports (fails if a port had to change)."""
        self._own()
        _services_sh("start", self.dir)
        self.degraded = False
        urls = _read_env_file(self.dir)
        if urls != (self.database_url, self.admin_url, self.redis_url):
            pytest.fail(f"services came back on other ports: {urls}", pytrace=False)

    def stop(self, purge=False):
        if self.running:
            self.running = False
            _services_sh("purge" if purge else "stop", self.dir)


def _read_env_file(directory):
    values = {}
    for line in (directory / "env").read_text().splitlines():
        if line.startswith("export ") and "=" in line:
            key, _, value = line[len("export "):].partition("=")
            values[key] = value
    missing = [k for k in _URL_KEYS if k not in values]
    if missing:
        raise RuntimeError(f"scripts/services.sh wrote no {missing} in {directory}/env")
    return tuple(values[k] for k in _URL_KEYS)


def _services_sh(cmd, directory, *args):
    p = subprocess.run(
        ["bash", str(SERVICES_SH), cmd, str(directory), *args],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300,
    )
    if p.returncode != 0:
        raise RuntimeError(
            f"scripts/services.sh {cmd} {directory} failed ({p.returncode}):\n{p.stderr}{p.stdout}"
        )
    return p
