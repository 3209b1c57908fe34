#!/usr/bin/env bash
# scripts/deps.sh -- make sure the Debian packages that gridpoints needs to build, run and
# test are installed.  Fast no-op when they all are (one dpkg-query call), so `make test` and
# `make run` can call it every time.  As root it installs what is missing; otherwise it
# prints the exact command to run and fails.
set -euo pipefail

PACKAGES=(
    # build
    build-essential pkg-config clang-format
    libevent-dev libpq-dev libhiredis-dev libjansson-dev libssl-dev libinih-dev libcmocka-dev
    zlib1g-dev libxlsxwriter-dev
    # run: our private PostgreSQL cluster and Redis (scripts/services.sh)
    postgresql-15 postgresql-contrib redis-server
    # test: black-box API tests (tests/api), load and clock tools
    python3 python3-pytest python3-requests python3-psycopg2 python3-redis python3-yaml python3-jsonschema
    python3-hypothesis wrk faketime openssl python3-openpyxl
    # make bench: instructions per request (callgrind)
    valgrind
    # promtool (tests/api/test_metrics.py checks /metrics and deploy/prometheus/ with it)
    prometheus
    # operations drills (make test-ops, tests/ops): the load balancer of deploy/haproxy/
    haproxy
    # fuzzing (tests/fuzz): clang with its libFuzzer and sanitizer runtimes
    clang libclang-rt-14-dev
    # browser tests (tests/browser): Debian's Chromium, driven by playwright-core from npm, and
    # CJK fonts so that the screenshots show the Chinese screens as a phone would
    chromium fonts-noto-cjk
    # the console's tests: the printed points board's page count (pdftoppm, pdfinfo)
    poppler-utils
)

die() {
    echo "deps.sh: $*" >&2
    exit 1
}

command -v dpkg-query >/dev/null 2>&1 || die "dpkg-query not found: this script expects Debian 12"

# Returns the packages of PACKAGES that are not fully installed, one per line.  One
# dpkg-query call for the whole list keeps the common case well under a second; packages
# dpkg has never heard of print nothing (and an error we do not need).
missing_packages() {
    local status p
    status=$(dpkg-query -W -f='${Package} ${Status}\n' "${PACKAGES[@]}" 2>/dev/null || true)
    for p in "${PACKAGES[@]}"; do
        grep -qxF "$p install ok installed" <<<"$status" || echo "$p"
    done
}

mapfile -t missing < <(missing_packages)
((${#missing[@]} == 0)) && exit 0

echo "deps.sh: missing packages: ${missing[*]}" >&2
if ((EUID != 0)); then
    echo "deps.sh: install them with:" >&2
    echo "  sudo apt-get install -y --no-install-recommends ${missing[*]}"
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
apt_install() {
    apt-get install -y --no-install-recommends "${missing[@]}"
}

# apt-get update is slow and needs the mirror: only run it when the package lists are
# absent (fresh image) or when an install from the current lists fails (stale lists).
if ! compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null; then
    apt-get update
fi
if ! apt_install; then
    echo "deps.sh: install failed, refreshing package lists and retrying" >&2
    apt-get update
    apt_install
fi

mapfile -t missing < <(missing_packages)
((${#missing[@]} == 0)) || die "still missing after install: ${missing[*]}"
echo "deps.sh: all packages installed" >&2
