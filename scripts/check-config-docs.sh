#!/usr/bin/env bash
# scripts/check-config-docs.sh -- every key of the config table (server/config.c) must appear,
# in its section, in config/gridpoints.conf, and by name in README.md; and the sample file
# must not mention keys the server does not know (they would be errors at start-up anyway).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Table entries look like: I("server", "max_connections", ...) -- one letter per type.
keys=$(grep -oE '^\s*[SIBDTZ]\("[a-z_]+", "[a-z_0-9]+"' server/config.c |
       sed -E 's/^\s*[A-Z]\("([a-z_]+)", "([a-z_0-9]+)"/\1.\2/' | sort -u)
[ -n "$keys" ] || { echo "check-config-docs: no keys found in server/config.c" >&2; exit 1; }

# Keys of the sample file as section.key (commented-out keys count: "# key = value").
conf_keys=$(awk '
    /^\[[a-z_]+\]/ { gsub(/[\[\]]/, ""); section = $0; next }
    /^#?[ ]?[a-z_0-9]+ *=/ { line = $0; sub(/^# ?/, "", line); split(line, kv, " *= *");
                             print section "." kv[1] }' config/gridpoints.conf | sort -u)

status=0
for k in $keys; do
    if ! grep -qx "$k" <<<"$conf_keys"; then
        echo "check-config-docs: $k is missing from config/gridpoints.conf" >&2
        status=1
    fi
    name=${k#*.}
    if ! grep -q "$name" README.md; then
        echo "check-config-docs: $k is not documented in README.md" >&2
        status=1
    fi
done
for k in $conf_keys; do
    if ! grep -qx "$k" <<<"$keys"; then
        echo "check-config-docs: config/gridpoints.conf has $k, which the server does not know" >&2
        status=1
    fi
done
[ $status -eq 0 ] && echo "check-config-docs: $(wc -w <<<"$keys") keys documented"
exit $status
