"""gridpointsd processes: the operator CLI (Cli), servers started here (Server,
ServerFactory) and a server that was already running (ExternalServer)."""

import itertools
import os
import signal
import subprocess
import time
from pathlib import Path
from urllib.parse import urlparse

import pytest
import requests

from gp import settings
from gp.settings import (CLI_TIMEOUT, LOG_TAIL_LINES, LSAN_SUPPRESSIONS, READY_TIMEOUT, REPO,
                         STOP_TIMEOUT, TEST_CONF)
from gp.util import SANITIZER_ENV, assert_no_sanitizer_report, free_port, http_session, tail

# Every Server ever created in this session: conftest's hooks print the logs of those that ran
# during a failing test, and kill_leftovers() ends any still running at the end.
SERVERS = []


def kill_leftovers():
    """Last resort (a test that forgot one, an interrupted session): our own processes only."""
    for srv in SERVERS:
        if srv.proc is not None:
            srv.kill9(check=False)


def require_binary():
    binary = settings.GRIDPOINTS_BIN
    if not binary.is_file() or not os.access(binary, os.X_OK):
        pytest.fail(
            f"gridpointsd binary not found at {binary}: build it with `make` (or run "
            "`make test`, which builds build/asan/gridpointsd and sets GRIDPOINTS_BIN), or set "
            "GRIDPOINTS_BIN to the binary to test",
            pytrace=False,
        )


def base_env(services, extra=None):
    """Environment of a gridpointsd process: ours minus every GRIDPOINTS_* variable (so that
    GRIDPOINTS_BIN, GRIDPOINTS_TEST_URL or a developer's sourced var/env cannot leak into the
    config), plus the services' URLs, the sanitizer options and `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRIDPOINTS_")}
    env.update(SANITIZER_ENV)
    if LSAN_SUPPRESSIONS.is_file():
        env["LSAN_OPTIONS"] = f"suppressions={LSAN_SUPPRESSIONS}:print_suppressions=0"
    if services is not None:
        env.update(services.env())
    if settings.LOG_LEVEL:
        env["GRIDPOINTS_LOG_LEVEL"] = settings.LOG_LEVEL
    env.update(extra or {})
    return env


class Cli:
    """Runs gridpointsd's operator commands against the test services.

    cli("migrate"), cli("create-admin", "--phone", p, ..., env={...}) -> CompletedProcess
    (text stdout/stderr). Fails the test on a non-zero exit (unless check=False), on a
    timeout, and always on a sanitizer report. Output is appended to <tmp>/cli.log."""

    def __init__(self, services, workdir):
        self.services = services
        self.log_path = workdir / "cli.log" if workdir else None

    def __call__(self, *args, env=None, check=True, timeout=CLI_TIMEOUT, conf=TEST_CONF):
        require_binary()
        cmd = [str(settings.GRIDPOINTS_BIN), "-c", str(conf), *map(str, args)]
        try:
            p = subprocess.run(
                cmd, cwd=REPO, env=base_env(self.services, env), stdin=subprocess.DEVNULL,
                capture_output=True, text=True, timeout=timeout,
            )
        except subprocess.TimeoutExpired as e:
            err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else e.stderr
            pytest.fail(f"{' '.join(cmd)} did not finish in {timeout:.0f} s\n{tail(err or '')}",
                        pytrace=False)
        if self.log_path:
            with open(self.log_path, "a") as f:
                f.write(f"=== {' '.join(cmd[1:])} -> exit {p.returncode}\n{p.stdout}{p.stderr}")
        what = f"gridpointsd {args[0] if args else ''}"
        assert_no_sanitizer_report(p.stderr, what, self.log_path)
        if check and p.returncode != 0:
            pytest.fail(f"{what} exited with {p.returncode}\n--- stdout ---\n{tail(p.stdout)}"
                        f"\n--- stderr ---\n{tail(p.stderr)}", pytrace=False)
        return p


class Server:
    """One gridpointsd process on its own free port.

    .url, .port, .pid, .log_path; .start(wait=True), .wait_ready(), .stop() (SIGTERM, then
    asserts exit 0 within 20 s and no sanitizer report), .kill9(), .restart(kill=False),
    .wait_exit(timeout) -> exit code (for servers expected to exit by themselves), .log_text(),
    .log_tail(n). Extra config goes in `env` as GRIDPOINTS_<SECTION>_<KEY>; restarts keep the
    port. Usable as a context manager (stops on exit)."""

    def __init__(self, name, workdir, services, *, binary=None, conf=TEST_CONF, env=None,
                 port=None, args=("serve",), allow_errors=False):
        self.name = name
        self.allow_errors = allow_errors
        self.services = services
        self.binary = Path(binary) if binary else None
        self.conf = Path(conf)
        self.extra_env = dict(env or {})
        self.args = tuple(args)
        self.port = port or free_port()
        self.log_path = Path(workdir) / f"server-{name}.log"
        self.proc = None
        self.starts = 0
        self.stopped_at = None
        SERVERS.append(self)

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def environ(self):
        env = base_env(self.services)
        env["GRIDPOINTS_SERVER_LISTEN"] = f"127.0.0.1:{self.port}"
        env.update(self.extra_env)
        return env

    def start(self, wait=True):
        if self.proc is not None and self.proc.poll() is not None:
            self._reaped()  # it died by itself (a crash test); start again
        assert self.proc is None, f"server {self.name} is already running"
        binary = self.binary or settings.GRIDPOINTS_BIN
        if self.binary is None:
            require_binary()
        elif not os.access(binary, os.X_OK):
            pytest.fail(f"server binary not found or not executable: {binary}", pytrace=False)
        self.starts += 1
        cmd = [str(binary), "-c", str(self.conf), *self.args]
        with open(self.log_path, "ab") as log:
            log.write(f"=== start #{self.starts}: {' '.join(cmd)} on port {self.port}\n".encode())
            log.flush()
            # Own session: a Ctrl-C of pytest must not reach the server; the harness stops it.
            self.proc = subprocess.Popen(
                cmd, cwd=REPO, env=self.environ(), stdin=subprocess.DEVNULL, stdout=log,
                stderr=log, start_new_session=True,
            )
        self.stopped_at = None
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout=READY_TIMEOUT):
        """Polls GET /readyz until 200; fails at once if the process exits."""
        deadline = time.monotonic() + timeout
        last = "no answer"
        with http_session() as http:
            while True:
                rc = self.proc.poll()
                if rc is not None:
                    self._reaped()
                    pytest.fail(f"server {self.name} exited with {rc} before it was ready"
                                f"\n--- {self.log_path} ---\n{self.log_tail()}", pytrace=False)
                try:
                    r = http.get(self.url + "/readyz", timeout=1)
                    if r.status_code == 200:
                        return self
                    last = f"{r.status_code} {r.text[:200]}"
                except requests.RequestException as e:
                    last = type(e).__name__
                if time.monotonic() > deadline:
                    self.kill9(check=False)
                    pytest.fail(f"server {self.name} not ready within {timeout:.0f} s (last "
                                f"/readyz: {last})\n--- {self.log_path} ---\n{self.log_tail()}",
                                pytrace=False)
                time.sleep(0.05)

    def stop(self, timeout=STOP_TIMEOUT, check=True):
        """SIGTERM, wait, then assert a graceful exit 0 and a clean stderr. Returns the code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            self._reaped()
            if check:
                pytest.fail(f"server {self.name} did not exit within {timeout:.0f} s of SIGTERM"
                            f"\n--- {self.log_path} ---\n{self.log_tail()}", pytrace=False)
            return None
        self._reaped()
        if check:
            self.check_log()
            if rc != 0:
                how = f"killed by signal {-rc}" if rc < 0 else f"exited with {rc}"
                pytest.fail(f"server {self.name} {how} after SIGTERM, expected 0"
                            f"\n--- {self.log_path} ---\n{self.log_tail()}", pytrace=False)
        return rc

    def kill9(self, check=True):
        """SIGKILL (a crash, for durability tests). Still fails on a sanitizer report that was
        printed before the kill."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._reaped()
        if check:
            self.check_log()

    def restart(self, kill=False):
        """Stop (asserted) or kill -9, then start again on the same port and wait for ready."""
        if kill:
            self.kill9()
        else:
            self.stop()
        return self.start()

    def wait_exit(self, timeout=STOP_TIMEOUT):
        """For a server expected to exit by itself: its exit code (fails after `timeout`)."""
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill9(check=False)
            pytest.fail(f"server {self.name} still running after {timeout:.0f} s", pytrace=False)
        self._reaped()
        return rc

    def check_log(self):
        text = self.log_text()
        assert_no_sanitizer_report(text, f"server {self.name}", self.log_path)
        # level=error means a bug or a broken deployment (transient outages log at warn); a
        # test that provokes one on purpose passes allow_errors=True to its server.
        if not self.allow_errors:
            errors = [ln for ln in text.splitlines() if " level=error " in ln]
            if errors:
                pytest.fail(f"server {self.name} logged errors ({self.log_path}):\n"
                            + "\n".join(errors[:20]), pytrace=False)

    def log_text(self):
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, n=LOG_TAIL_LINES):
        return tail(self.log_text(), n)

    def _reaped(self):
        self.proc = None
        self.stopped_at = time.time()

    def __enter__(self):
        if self.proc is None:
            self.start()
        return self

    def __exit__(self, *exc):
        self.stop(check=exc[0] is None)

    def __repr__(self):
        return f"<Server {self.name} {self.url} pid={self.pid}>"


class ExternalServer:
    """The server named by GRIDPOINTS_TEST_URL: it can be talked to, not controlled."""

    name = "external"
    log_path = None
    running = True
    pid = None
    stopped_at = None

    def __init__(self, url):
        self.url = url
        self.port = urlparse(url).port

    def _skip(self, *a, **kw):
        pytest.skip("needs a server started by the harness (GRIDPOINTS_TEST_URL is set)")

    start = stop = kill9 = restart = wait_exit = wait_ready = _skip

    def check_log(self):
        pass

    def log_tail(self, n=LOG_TAIL_LINES):
        return ""

    def __repr__(self):
        return f"<ExternalServer {self.url}>"


class ServerFactory:
    """server_factory.new(name=None, *, env=None, port=None, start=True, binary=None,
    conf=TEST_CONF, args=("serve",)) -> Server. Several may run at once (multi-instance
    tests); they share the session's PostgreSQL and Redis."""

    def __init__(self, services, workdir):
        self.services = services
        self.workdir = workdir
        self._names = itertools.count(1)

    def new(self, name=None, *, start=True, **kw):
        if settings.EXTERNAL_URL:
            pytest.skip("needs a server started by the harness (GRIDPOINTS_TEST_URL is set)")
        srv = Server(name or f"s{next(self._names)}", self.workdir, self.services, **kw)
        if start:
            srv.start()
        return srv
