"""gp -- the helpers of the black-box API tests (tests/api). conftest.py holds the fixtures
and hooks and imports everything else from here; test modules import helpers from here too:

    from gp import Api, error_code, unique_phone

Modules (each name below is also importable from `gp` itself):
    settings  REPO, TEST_CONF, GRIDPOINTS_BIN, EXTERNAL_URL, timeouts (from the environment)
    util      free_port, unique_phone, unique_name, error_code, sanitizer_reports,
              SANITIZER_ENV, tail, http_session
    services  Services: the session's PostgreSQL + Redis (scripts/services.sh)
    sql       Sql: psycopg2, autocommit, as the superuser
    kv        kv.connect(url) -> redis.Redis (Debian's python3-redis, replies as str)
    server    Cli, Server, ServerFactory, ExternalServer: gridpointsd processes
    api       Api: a requests client of one server
    deployment Deployment: a second deployment with its own PostgreSQL and Redis; tls_files
"""

from gp import kv
from gp.api import Api
from gp.server import Cli, ExternalServer, Server, ServerFactory
from gp.services import Services
from gp.settings import EXTERNAL_URL, GRIDPOINTS_BIN, REPO, TEST_CONF
from gp.sql import Sql
from gp.util import (SANITIZER_ENV, error_code, free_port, http_session, sanitizer_reports,
                     tail, unique_name, unique_phone)

__all__ = [
    "kv", "Api", "Cli", "ExternalServer", "Server", "ServerFactory", "Services", "Sql",
    "EXTERNAL_URL", "GRIDPOINTS_BIN", "REPO", "TEST_CONF", "SANITIZER_ENV", "error_code",
    "free_port", "http_session", "sanitizer_reports", "tail", "unique_name", "unique_phone",
]
