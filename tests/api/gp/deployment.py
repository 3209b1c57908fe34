"""A whole second gridpointsd deployment in one test session: its own PostgreSQL and Redis
(scripts/services.sh in its own directory), migrated, and its own server (tests of the points
exchange, tests/api/test_exchange.py, run a street and a "city" side by side).

Also: tls_files(directory) makes a self-signed certificate for 127.0.0.1 that a server can
listen with (server.tls_listen) and a client can trust (exchange.ca_file)."""

import subprocess

from gp.server import Cli, Server
from gp.services import Services
from gp.sql import Sql
from gp.util import free_port


def tls_files(directory):
    """-> (cert.pem, key.pem) in directory: EC P-256, CN and SAN IP 127.0.0.1, two days."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / "cert.pem", directory / "key.pem"
    if not cert.is_file():
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key),
                        "-out", str(cert), "-days", "2", "-subj", "/CN=127.0.0.1",
                        "-addext", "subjectAltName=IP:127.0.0.1"],
                       check=True, capture_output=True, timeout=60)
    return cert, key


def tls_env(cert, key, port):
    """The server settings of a TLS listener on 127.0.0.1:port with these files."""
    return {"GRIDPOINTS_SERVER_TLS_LISTEN": f"127.0.0.1:{port}",
            "GRIDPOINTS_SERVER_TLS_CERT": str(cert), "GRIDPOINTS_SERVER_TLS_KEY": str(key)}


class Deployment:
    """Deployment(name, workdir, env=None) -> started: .services (its own PostgreSQL + Redis),
    .cli, .server (a Server on those services), .sql (superuser). .stop() stops the server
    (asserted) and purges the services."""

    def __init__(self, name, workdir, env=None, start=True):
        self.name = name
        self.dir = workdir / f"deployment-{name}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o755)
        self.services = Services.launch(self.dir / "services")
        self.cli = Cli(self.services, self.dir)
        self.cli("migrate")
        self.server = Server(name, self.dir, self.services, env=env)
        self.sql = Sql(self.services.admin_url)
        if start:
            self.server.start()

    def stop(self, check=True):
        try:
            if self.server.proc is not None:
                self.server.stop(check=check)
        finally:
            self.sql.close()
            self.services.stop(purge=True)


def new_tls_port():
    return free_port()
