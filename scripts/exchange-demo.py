#!/usr/bin/env python3
"""scripts/exchange-demo.py -- registers two running gridpointsd deployments as exchange
partners of each other (docs/EXCHANGE.md), for the demo "city" of `make run CITY=1`.

    exchange-demo.py --street URL PHONE PASSWORD --city URL PHONE PASSWORD \
                     --street-tls PORT --city-tls PORT [--rate 10:1]

Logs in as each side's street admin, and on each side registers the other one (code "city"
on the street, "street" on the city) with fresh keys, unless a partner of that code exists
already. Standard library only."""

import argparse
import json
import secrets
import sys
import urllib.error
import urllib.request


def call(base, method, path, body=None, token=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def login(base, phone, password):
    st, body = call(base, "POST", "/api/v1/auth/login", {"phone": phone, "password": password})
    if st != 200:
        sys.exit(f"exchange-demo: login {phone} at {base} failed: {st} {body}")
    st, me = call(base, "GET", "/api/v1/me", token=body["token"])
    return body["token"], me


def street_of(me):
    for g in me.get("roles", []):
        if g.get("role") == "street_admin":
            return g["unit_id"]
    return me.get("unit_id") or me.get("unit", {}).get("id")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--street", nargs=3, required=True, metavar=("URL", "PHONE", "PASSWORD"))
    ap.add_argument("--city", nargs=3, required=True, metavar=("URL", "PHONE", "PASSWORD"))
    ap.add_argument("--street-tls", type=int, required=True)
    ap.add_argument("--city-tls", type=int, required=True)
    ap.add_argument("--rate", default="10:1", help="street points : city points")
    a = ap.parse_args()
    num, den = (int(x) for x in a.rate.split(":"))
    sides = {}
    for name, (url, phone, pw) in (("street", a.street), ("city", a.city)):
        token, me = login(url, phone, pw)
        sides[name] = (url, token, street_of(me))
    ka, kb = "xp_" + secrets.token_hex(8), "xp_" + secrets.token_hex(8)
    sa, sb = secrets.token_hex(24), secrets.token_hex(24)
    plans = [("street", "city", f"https://127.0.0.1:{a.city_tls}", ka, sa, kb, sb, num, den),
             ("city", "street", f"https://127.0.0.1:{a.street_tls}", kb, sb, ka, sa, den, num)]
    for side, code, url, okid, osec, ikid, isec, rn, rd in plans:
        base, token, unit = sides[side]
        st, have = call(base, "GET", "/api/v1/exchange/partners", token=token)
        if any(p.get("code") == code for p in have.get("items", [])):
            print(f"exchange-demo: {side} already has partner {code}")
            continue
        st, body = call(base, "POST", "/api/v1/exchange/partners", {
            "unit_id": unit, "code": code, "name": f"demo {code}", "base_url": url,
            "out_key_id": okid, "out_secret": osec, "in_key_id": ikid, "in_secret": isec,
            "rate_num": rn, "rate_den": rd, "worker_daily_limit": 100000,
            "partner_daily_limit": 10000000}, token=token)
        if st != 201:
            sys.exit(f"exchange-demo: registering {code} on {side} failed: {st} {body}")
        print(f"exchange-demo: {side} registered partner {code} (id {body['id']}, rate {rn}:{rd})")


if __name__ == "__main__":
    main()
