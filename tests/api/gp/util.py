"""Small helpers with no state beyond this test session: ports, unique names, error codes,
log tails and sanitizer reports."""

import itertools
import random
import socket

import pytest
import requests

from gp.settings import LOG_TAIL_LINES

# Any of these in a server's or the CLI's stderr fails the test (Redis's
# check_sanitizer_errors, nginx-tests' "no sanitizer errors").
SANITIZER_PATTERNS = (
    "ERROR: AddressSanitizer",
    "ERROR: LeakSanitizer",
    "LeakSanitizer has encountered a fatal error",
    "runtime error:",
    "SUMMARY: AddressSanitizer",
    "SUMMARY: UndefinedBehaviorSanitizer",
    "WARNING: ThreadSanitizer",
)
SANITIZER_ENV = {
    "ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0:halt_on_error=1",
    "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1",
}


def sanitizer_reports(text):
    """The lines of `text` that belong to a sanitizer or leak report (empty list if none)."""
    return [line for line in text.splitlines() if any(p in line for p in SANITIZER_PATTERNS)]


def assert_no_sanitizer_report(text, what, log_path=None):
    found = sanitizer_reports(text)
    if found:
        where = f" (full log: {log_path})" if log_path else ""
        pytest.fail(
            f"{what}: sanitizer report in stderr{where}:\n" + "\n".join(found[:20])
            + "\n--- tail ---\n" + tail(text),
            pytrace=False,
        )


def tail(text, n=LOG_TAIL_LINES):
    return "\n".join(text.splitlines()[-n:])


_handed_out_ports = set()


def free_port():
    """A loopback TCP port that is free now and not handed out before in this session.

    Chosen below the kernel's ephemeral range, so that an outgoing connection cannot take it
    between a server's stop and its restart on the same port."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low = int(f.read().split()[0])
    except OSError:
        low = 32768
    high = low - 1 if low > 12000 else 65535
    rng = random.SystemRandom()
    for _ in range(1000):
        port = rng.randint(10000, high)
        if port in _handed_out_ports or port in (5432, 6379, 8080):
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out_ports.add(port)
        return port
    raise RuntimeError("no free loopback port found")


# Phones: 11 digits, "1" then 3-9 like a mainland mobile number, then a random per-session
# tag and a counter, so that two sessions against one external server rarely collide.
_SESSION_TAG = random.SystemRandom().randrange(1000)
_PHONE_HEAD = f"1{random.SystemRandom().choice('3456789')}{_SESSION_TAG:03d}"
_counter = itertools.count(1)


def unique_phone():
    """An 11-digit phone number starting with 1, unique in this test session."""
    return f"{_PHONE_HEAD}{next(_counter):06d}"


def unique_name(prefix="t"):
    """A short name unique in this test session, e.g. for a street or a person."""
    return f"{prefix}-{_SESSION_TAG:03d}-{next(_counter)}"


def error_code(resp):
    """The machine code of an error reply ({"error":{"code":...}}), or None.

    Tests assert on codes, never on message text (STYLE.md item 41)."""
    try:
        return resp.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return None


def http_session():
    """A requests.Session for loopback traffic."""
    s = requests.Session()
    s.trust_env = False  # never send loopback traffic through an http_proxy from the env
    return s
