"""Operator habits: `gridpointsd --version` / `--help` on stdout, per-command help, and
`check-config` validating a configuration without starting. (`make stop` is a drill of
tests/ops: tests/ops/test_make_stop.py.)"""

import os
import pathlib
import re
import socket
import subprocess

import pytest

from gp import settings

ROOT = pathlib.Path(__file__).resolve().parents[2]
TEST_CONF = ROOT / "tests/api/test.conf"


def gp(*args, env=None, timeout=60):
    e = {k: v for k, v in os.environ.items() if not k.startswith("GRIDPOINTS_")}
    e.update(env or {})
    return subprocess.run([str(settings.GRIDPOINTS_BIN), *args], capture_output=True, text=True,
                          timeout=timeout, env=e, cwd=ROOT)


def commands():
    """The commands `--help` lists."""
    out = gp("--help").stdout
    block = out.split("commands:\n", 1)[1]
    return [m.group(1) for m in re.finditer(r"^  ([a-z][a-z-]*)", block, re.M)]


@pytest.mark.parametrize("args", [["--version"], ["-V"], ["version"]])
def test_version_on_stdout(args):
    p = gp(*args)
    assert p.returncode == 0 and p.stderr == ""
    assert re.fullmatch(r"gridpointsd \d+\.\d+\.\d+\n", p.stdout), p.stdout


@pytest.mark.parametrize("args", [["--help"], ["-h"], ["help"]])
def test_help_on_stdout_lists_every_command(args):
    p = gp(*args)
    assert p.returncode == 0 and p.stderr == ""
    assert p.stdout.startswith("usage: gridpointsd")
    for opt in ("--config", "--help", "--version"):
        assert opt in p.stdout
    listed = commands()
    for cmd in ("serve", "migrate", "check-config", "create-admin", "rebuild-cache", "export",
                "verify", "print-config"):
        assert cmd in listed, listed


def test_every_command_has_its_own_help():
    for cmd in commands():
        for args in (["help", cmd], [cmd, "--help"], [cmd, "-h"]):
            p = gp(*args)
            assert p.returncode == 0 and p.stderr == "", (args, p.stderr)
            want = "usage: gridpointsd" if cmd == "help" else f"usage: gridpointsd [-c CONFIG] {cmd}"
            assert p.stdout.startswith(want), (args, p.stdout)
    # a command's --help never runs it: `migrate --help` against no database answers at once
    p = gp("-c", str(TEST_CONF), "migrate", "--help")
    assert p.returncode == 0 and "usage:" in p.stdout


def test_unknown_command_or_option_fails_on_stderr():
    for args in (["nope"], ["help", "nope"], ["--bogus"], ["-c"]):
        p = gp(*args)
        assert p.returncode == 2, args
        assert p.stdout == "" and p.stderr.strip(), args


def test_check_config_accepts_a_valid_configuration(tmp_path):
    for flag in ("-c", "--config"):
        p = gp(flag, str(TEST_CONF), "check-config")
        assert p.returncode == 0, p.stderr
        assert p.stdout == f"configuration OK: {TEST_CONF}\n"
    # it opens no socket and connects nowhere: a listen address already taken, and the
    # placeholder database and Redis of test.conf (port 1), are no problem
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        p = gp("-c", str(TEST_CONF), "check-config",
               env={"GRIDPOINTS_SERVER_LISTEN": f"127.0.0.1:{port}"})
        assert p.returncode == 0, p.stderr


def conf_with(tmp_path, extra):
    text = TEST_CONF.read_text()
    f = tmp_path / "gp.conf"
    f.write_text(text + "\n" + extra + "\n")
    return f


@pytest.mark.parametrize("extra, key", [
    ("[server]\nlisten2 = 1", "listen2"),                              # unknown key
    ("[database]\npool_size = many", "pool_size"),                      # wrong type
    ("[database]\npool_size = 100000000", "pool_size"),                 # out of bounds
    ("[timers]\nops_gauges_interval = 5ms", "ops_gauges_interval"),     # below the minimum
    ("[server]\nmetrics_listen = 127.0.0.1", "metrics_listen"),         # no port
    ("[redis]\nurl = http://x", "redis"),                               # not a Redis URL
])
def test_check_config_names_the_bad_key(tmp_path, extra, key):
    f = conf_with(tmp_path, extra)
    p = gp("-c", str(f), "check-config")
    assert p.returncode == 2, p.stdout + p.stderr
    assert p.stdout == ""
    assert key in p.stderr, p.stderr


def test_check_config_reads_the_files_it_names(tmp_path):
    missing = tmp_path / "missing"
    f = conf_with(tmp_path, f"[server]\ntls_listen = 127.0.0.1:0\ntls_cert = {missing}.crt\n"
                            f"tls_key = {missing}.key\n[audit]\nkey_file = {missing}.pem")
    p = gp("-c", str(f), "check-config")
    assert p.returncode == 2
    assert f"{missing}.crt" in p.stderr and f"{missing}.pem" in p.stderr, p.stderr
    assert "2 problems" in p.stderr, p.stderr
    # a required secret missing
    p = gp("-c", str(TEST_CONF), "check-config",
           env={"GRIDPOINTS_MERCHANT_KEY_ENCRYPTION_KEY": "short"})
    assert p.returncode == 2 and "merchant.key_encryption_key" in p.stderr, p.stderr
    p = gp("-c", str(tmp_path / "nope.conf"), "check-config")
    assert p.returncode == 2 and "nope.conf" in p.stderr
