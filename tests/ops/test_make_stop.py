"""`make stop` stops what `make run` started: the server (it drains) and its private PostgreSQL
and Redis, also after the shell of `make run` died without its clean-up (a closed terminal).
An operations drill (`make test-ops`): it runs scripts/run.sh twice, with a fresh PostgreSQL
cluster, migrations and the demo street, which takes a minute under ASan."""

import os
import pathlib
import signal
import socket
import subprocess
import time

import pytest
import requests

from gp import settings

ROOT = pathlib.Path(__file__).resolve().parents[2]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def services_status(d):
    return subprocess.run([str(ROOT / "scripts/services.sh"), "status", str(d)],
                          capture_output=True, text=True, timeout=60)


def test_make_stop_stops_what_make_run_started(tmp_path):
    """`make run`'s script in a private directory; its shell dies without cleaning up (a closed
    terminal); `make stop` then stops the server and its PostgreSQL and Redis."""
    d = tmp_path / "run"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRIDPOINTS_")}
    env.update(GRIDPOINTS_RUN_DIR=str(d), GRIDPOINTS_SERVER_LISTEN=f"127.0.0.1:{port}",
               GRIDPOINTS_BIN=str(settings.GRIDPOINTS_BIN))
    log = open(tmp_path / "run.log", "w")
    run = subprocess.Popen([str(ROOT / "scripts/run.sh")], cwd=ROOT, env=env, stdout=log,
                           stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(proc):
        deadline = time.monotonic() + 120
        while True:
            try:
                if requests.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            assert proc.poll() is None, (tmp_path / "run.log").read_text()[-3000:]
            assert time.monotonic() < deadline, (tmp_path / "run.log").read_text()[-3000:]
            time.sleep(0.3)

    try:
        wait_ready(run)
        server_pid = int((d / "gridpointsd.pid").read_text())
        assert services_status(d).returncode == 0
        # the terminal goes away: the script dies, its EXIT trap never runs
        run.send_signal(signal.SIGKILL)
        run.wait(timeout=10)
        assert requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
        p = subprocess.run(["make", "--no-print-directory", "stop"], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=120)
        assert p.returncode == 0, p.stdout + p.stderr
        assert not pathlib.Path(f"/proc/{server_pid}").exists() or \
            "zombie" in pathlib.Path(f"/proc/{server_pid}/status").read_text().lower() or \
            b"gridpointsd" not in pathlib.Path(f"/proc/{server_pid}/cmdline").read_bytes()
        st = services_status(d)
        assert st.returncode == 3, st.stdout
        with pytest.raises(requests.ConnectionError):
            requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
        # the server drained and said goodbye
        assert "bye (exit 0)" in (tmp_path / "run.log").read_text()
        # again: nothing left to stop, still fine
        p = subprocess.run(["make", "--no-print-directory", "stop"], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=120)
        assert p.returncode == 0, p.stdout + p.stderr
        # `make run` again on the same data, still in its terminal: `make stop` from another
        # one ends it cleanly (the server drains, the script stops the services and exits 0)
        run = subprocess.Popen([str(ROOT / "scripts/run.sh")], cwd=ROOT, env=env, stdout=log,
                               stderr=subprocess.STDOUT, start_new_session=True)
        wait_ready(run)
        p = subprocess.run(["make", "--no-print-directory", "stop"], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=120)
        assert p.returncode == 0, p.stdout + p.stderr
        assert run.wait(timeout=30) == 0
        assert services_status(d).returncode == 3
        assert not (d / "gridpointsd.pid").exists() and not (d / "run.pid").exists()
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
        subprocess.run([str(ROOT / "scripts/services.sh"), "purge", str(d)], capture_output=True,
                       timeout=120)
        log.close()
