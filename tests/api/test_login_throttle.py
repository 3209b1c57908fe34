"""Login throttling (issue 10, item 6): an attacker who knows a worker's phone number is
slowed down and refused, and cannot keep the worker out.

Each test starts its own server with small limits and server.trust_proxy on, so that the
client address comes from X-Forwarded-For and one test can play several addresses. The
throttle is described in include/login_throttle.h and docs/OPERATIONS.md ("Login throttling").
"""
import itertools
import secrets
import time

import pytest

from gp import Api, error_code, unique_phone

PAIR = 3          # failures per (phone, address) or (phone, known device)
ADDR = 12         # attempts per address over all phones
FREE = 4          # failures per phone before the slow-down
DELAY_S = 1       # first delay
DELAY_MAX_S = 3   # delay ceiling
WINDOW_S = 60     # pair and address window


_nets = itertools.count(1)


def net():
    """Addresses of a network no other test uses: the counters live in the session's one
    Redis, keyed by address, across servers and tests. net()(7) -> "10.x.y.7"."""
    n = next(_nets)
    salt = secrets.randbelow(200)
    return lambda i: f"10.{n}.{salt}.{i}"


def throttled_server(make_server, **over):
    env = {
        "GRIDPOINTS_SERVER_TRUST_PROXY": "true",
        "GRIDPOINTS_AUTH_LOGIN_LIMIT_PER_PAIR": str(PAIR),
        "GRIDPOINTS_AUTH_LOGIN_LIMIT_PER_ADDR": str(ADDR),
        "GRIDPOINTS_AUTH_LOGIN_WINDOW": f"{WINDOW_S}s",
        "GRIDPOINTS_AUTH_LOGIN_PHONE_FREE": str(FREE),
        "GRIDPOINTS_AUTH_LOGIN_PHONE_WINDOW": "10m",
        "GRIDPOINTS_AUTH_LOGIN_PHONE_DELAY": f"{DELAY_S}s",
        "GRIDPOINTS_AUTH_LOGIN_PHONE_DELAY_MAX": f"{DELAY_MAX_S}s",
    }
    env.update({f"GRIDPOINTS_AUTH_{k.upper()}": str(v) for k, v in over.items()})
    return make_server(env=env)


def login(api, phone, password, addr, device=None):
    body = {"phone": phone, "password": password}
    if device is not None:
        body["device_token"] = device
    return api.post("/api/v1/auth/login", body, token=None, headers={"X-Forwarded-For": addr})


def assert_429(r, code, max_retry_s):
    """A throttled login: 429, a JSON error with its code, and a sane Retry-After."""
    assert r.status_code == 429, (r.status_code, r.text)
    assert r.headers["Content-Type"].startswith("application/json")
    err = r.json()["error"]
    assert err["code"] == code and err["message"]
    retry = int(r.headers["Retry-After"])
    assert 1 <= retry <= max_retry_s, retry
    return retry


def owner(make_admin, srv, api, addr):
    """A person with a known device: their first login from addr hands out a device token."""
    adm = make_admin(srv, login=False)
    r = login(api, adm["phone"], adm["password"], addr)
    assert r.status_code == 200, r.text
    adm["device"] = r.json()["device_token"]
    assert len(adm["device"]) == 43
    return adm


def test_attacker_slowed_owner_with_known_device_logs_in(make_server, make_admin):
    a = net()
    # Delays long enough that a slow (sanitized) server cannot outrun them in this test.
    srv = throttled_server(make_server, login_phone_delay="20s", login_phone_delay_max="40s")
    api = Api(srv)
    victim = owner(make_admin, srv, api, a(1))

    # The attacker spreads wrong passwords over several addresses, so no pair limit is hit:
    # the first FREE failures go through, then the phone is slowed down.
    statuses = []
    for i in range(20):
        r = login(api, victim["phone"], f"guess-{i}", a(100 + i % 5))
        statuses.append(r.status_code)
        if r.status_code == 429:
            assert_429(r, "login_delayed", 20)
    assert statuses == [401] * FREE + [429] * (20 - FREE), statuses

    # The owner's known device is not slowed down, whichever address it comes from.
    for addr in (a(1), a(3)):
        r = login(api, victim["phone"], victim["password"], addr, device=victim["device"])
        assert r.status_code == 200, r.text
        assert r.json()["device_token"] == victim["device"]  # kept, its expiry renewed

    # The attacker is still slowed down: the owner's success gave no fresh allowance.
    r = login(api, victim["phone"], "guess-x", a(4))
    assert_429(r, "login_delayed", 20)
    api.close()


def test_slow_down_grows_but_never_locks(make_server, make_admin):
    a = net()
    srv = throttled_server(make_server)
    api = Api(srv)
    victim = owner(make_admin, srv, api, a(1))
    for i in range(FREE):
        assert login(api, victim["phone"], "wrong", a(100 + i)).status_code == 401

    # Each failure let through doubles the wait, up to the ceiling.
    waits = []
    for i in range(4):
        r = login(api, victim["phone"], "wrong", a(120 + i))
        waits.append(assert_429(r, "login_delayed", DELAY_MAX_S))
        # Hammering while slowed changes nothing: the wait does not grow by being asked.
        for j in range(5):
            again = login(api, victim["phone"], "wrong", a(150 + j))
            assert assert_429(again, "login_delayed", DELAY_MAX_S) <= waits[-1]
        time.sleep(waits[-1])
        assert login(api, victim["phone"], "wrong", a(120 + i)).status_code == 401
    assert waits == [1, 2, 3, 3], waits

    # The owner on a new device at a new address is slowed like anyone, never for the
    # pair window: after Retry-After seconds the right password gets in.
    r = login(api, victim["phone"], victim["password"], a(5))
    wait = assert_429(r, "login_delayed", DELAY_MAX_S)
    assert wait < WINDOW_S
    time.sleep(wait)
    r = login(api, victim["phone"], victim["password"], a(5))
    assert r.status_code == 200, r.text
    assert r.json()["device_token"] != victim["device"]  # a new device, a new token
    api.close()


def test_pair_limit_is_per_address_and_per_device(make_server, make_admin):
    a = net()
    # A high phone allowance, so that only the pair limits speak here.
    srv = throttled_server(make_server, login_phone_free=1000)
    api = Api(srv)
    victim = owner(make_admin, srv, api, a(1))
    phone, pw = victim["phone"], victim["password"]

    codes = [login(api, phone, "wrong", a(6)).status_code for _ in range(PAIR + 1)]
    assert codes == [401] * PAIR + [429], codes
    # The pair is refused even with the right password, for the window ...
    r = login(api, phone, pw, a(6))
    assert_429(r, "too_many_attempts", WINDOW_S)
    # ... but only that pair: the owner at another address, or with their known device at
    # the very same address, gets in.
    assert login(api, phone, pw, a(7)).status_code == 200
    assert login(api, phone, pw, a(6), device=victim["device"]).status_code == 200

    # A known device is not exempt from its own (phone, device) limit.
    dev = victim["device"]
    codes = [login(api, phone, "wrong", a(1), device=dev).status_code
             for _ in range(PAIR + 1)]
    assert codes == [401] * PAIR + [429], codes
    assert_429(login(api, phone, pw, a(2), device=dev), "too_many_attempts", WINDOW_S)

    # An unregistered phone is throttled exactly like a registered one: the 429s do not
    # tell which numbers exist.
    stranger = unique_phone()
    codes = [login(api, stranger, "wrong", a(6)).status_code for _ in range(PAIR + 1)]
    assert codes == [401] * PAIR + [429], codes
    api.close()


def test_success_resets_the_pair(make_server, make_admin):
    a = net()
    srv = throttled_server(make_server, login_phone_free=1000)
    api = Api(srv)
    victim = owner(make_admin, srv, api, a(1))
    phone, pw, addr = victim["phone"], victim["password"], a(8)
    for _ in range(3):
        codes = [login(api, phone, "typo", addr).status_code for _ in range(PAIR - 1)]
        assert codes == [401] * (PAIR - 1), codes
        assert login(api, phone, pw, addr).status_code == 200
    # Without the successes in between, that was 3 * (PAIR - 1) > PAIR failures.
    codes = [login(api, phone, "typo", addr).status_code for _ in range(PAIR + 1)]
    assert codes == [401] * PAIR + [429], codes
    api.close()


def test_address_cap_across_phones(make_server, make_admin):
    a = net()
    srv = throttled_server(make_server)
    api = Api(srv)
    victim = owner(make_admin, srv, api, a(1))
    sprayer = a(9)
    codes = [login(api, unique_phone(), "123456", sprayer).status_code for _ in range(ADDR)]
    assert codes == [401] * ADDR, codes
    # The address is out, for any phone, the right password included.
    assert_429(login(api, unique_phone(), "123456", sprayer), "too_many_attempts", WINDOW_S)
    assert_429(login(api, victim["phone"], victim["password"], sprayer), "too_many_attempts",
               WINDOW_S)
    # Other addresses are not.
    r = login(api, victim["phone"], victim["password"], a(10), device=victim["device"])
    assert r.status_code == 200

    # Successes are not failures: an office behind one address logs in all day.
    office = a(11)
    for _ in range(ADDR + 3):
        r = login(api, victim["phone"], victim["password"], office, device=victim["device"])
        assert r.status_code == 200, r.text
    api.close()


@pytest.mark.parametrize("device, code", [
    (12345, "invalid_type"),
    ("", "invalid_length"),
    ("x" * 65, "invalid_length"),
])
def test_bad_device_token_is_refused(make_server, make_admin, device, code):
    a = net()
    srv = throttled_server(make_server)
    api = Api(srv)
    adm = make_admin(srv, login=False)
    r = login(api, adm["phone"], adm["password"], a(1), device=device)
    assert r.status_code == 400 and error_code(r) == code
    assert r.json()["error"]["field"] == "device_token"
    api.close()


def test_unknown_device_token_is_a_new_device(make_server, make_admin):
    a = net()
    srv = throttled_server(make_server, login_phone_delay="20s", login_phone_delay_max="40s")
    api = Api(srv)
    victim = owner(make_admin, srv, api, a(1))
    other = owner(make_admin, srv, api, a(13))
    for i in range(FREE):
        assert login(api, victim["phone"], "wrong", a(100 + i)).status_code == 401
    # Neither a made-up token nor another person's device exempts from the slow-down.
    for dev in ("A" * 43, other["device"], "é{}" * 5):
        r = login(api, victim["phone"], victim["password"], a(12), device=dev)
        assert_429(r, "login_delayed", 20)
    r = login(api, victim["phone"], victim["password"], a(12), device=victim["device"])
    assert r.status_code == 200
    api.close()


def test_hostile_phones_and_addresses(make_server):
    srv = throttled_server(make_server)
    api = Api(srv)
    phones = ["{}{}{}{}{}{", "}}}}}}}}}}}", "1380000000\u00e9", "\U0001F300" * 11, "13800138000"]
    addrs = ["{evil}", "a" * 200, "::ffff:127.0.0.1", "1.2.3.4, {x}", "\u00e9\u00e9"]
    for p in phones:
        for a in addrs:
            r = login(api, p, "x", a, device="{" + a[:60])
            assert r.status_code in (401, 429), (p, a, r.status_code, r.text)
            assert r.json()["error"]["code"] in ("invalid_credentials", "too_many_attempts",
                                                 "login_delayed")
    assert api.get("/healthz").status_code == 200
    api.close()


def test_redis_down_fails_open(make_server, make_admin, services):
    a = net()
    srv = throttled_server(make_server)
    api = Api(srv)
    victim = owner(make_admin, srv, api, a(1))
    for i in range(PAIR):
        assert login(api, victim["phone"], "wrong", a(6)).status_code == 401
    assert login(api, victim["phone"], "wrong", a(6)).status_code == 429
    services.stop_redis()
    try:
        # No counters to ask: the password alone decides (PostgreSQL is the truth).
        assert login(api, victim["phone"], "wrong", a(6)).status_code == 401
        r = login(api, victim["phone"], victim["password"], a(6))
        assert r.status_code == 200, r.text
    finally:
        services.start()
    # Redis came back empty: counters and known devices are gone, nobody is locked out.
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and api.get("/readyz").status_code != 200:
        time.sleep(0.2)
    r = login(api, victim["phone"], victim["password"], a(6))
    assert r.status_code == 200, r.text
    api.close()
