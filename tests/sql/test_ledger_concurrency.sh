#!/usr/bin/env bash
# tests/sql/test_ledger_concurrency.sh -- the ledger under concurrent sessions (SPEC §4.2, §4.4,
# §4.8): many psql sessions at once, each its own connection and transaction, as gp_app.
#
#   tests/sql/test_ledger_concurrency.sh DBNAME
#
# DBNAME must be a fresh database migrated by `gridpointsd migrate`; PGHOST/PGPORT/PGUSER (a role that
# can create the fixtures) come from the environment. Exits non-zero on the first failed check.
set -euo pipefail
# The API functions live in schema gp (sql/functions), as the server sees them.
export PGOPTIONS="${PGOPTIONS:-} -c search_path=gp,public"

DB=${1:?usage: $0 DBNAME}
N=${LEDGER_CONC_N:-100}
PSQL=(psql -X -q -At -v ON_ERROR_STOP=1 -d "$DB")
APP=(psql -X -q -At -v ON_ERROR_STOP=1 -U gp_app -d "$DB")

fail() {
    echo "FAIL: $*" >&2
    exit 1
}
q() { "${PSQL[@]}" -c "$1"; }

# Runs the SQL of each stdin line in its own gp_app session, all at once; prints how many
# succeeded.
parallel_ok() {
    xargs -d "\n" -P "$N" -I{} sh -c "psql -X -q -At -v ON_ERROR_STOP=1 -U gp_app -d '$DB' -c \"{}\" >/dev/null 2>&1 && echo ok || true" |
        grep -c ok || true
}

q "INSERT INTO org_units (id, parent_id, level, name) VALUES (5001, NULL, 'street', 'CS'), (5011, 5001, 'community', 'CC'), (5111, 5011, 'grid', 'CG')"
q "INSERT INTO persons (id, phone, name, unit_id, password_hash) VALUES (501, '13900000501', 'admin', 5001, 'x')"
q "INSERT INTO role_grants (person_id, role, unit_id) VALUES (501, 'street_admin', 5001)"
q "INSERT INTO persons (id, phone, name, unit_id, password_hash)
   SELECT 600 + i, '139000006' || lpad(i::text, 2, '0'), 'w' || i, 5111, 'x' FROM generate_series(0, 19) i"
q "SELECT gp_issue(501, 5001, 5000, 'budget')" >/dev/null

echo "== $N concurrent reserves of 10 against a budget of 400"
q "SELECT gp_grant(501, 5001, 5111, 400, NULL)" >/dev/null
got=$(seq 1 "$N" | sed 's/.*/SELECT gp_task_reserve(7000 + &, 5111, 10, 501)/' | parallel_ok)
[[ $got == 40 ]] || fail "expected 40 reserves to succeed, got $got"
[[ $(q "SELECT balance FROM accounts WHERE kind = 'budget' AND owner_id = 5111") == 0 ]] || fail "budget not 0"
echo "ok: exactly 40 succeeded, budget 0"

echo "== $N concurrent awards of 10 against a reservation of 400 (20 workers)"
q "SELECT gp_grant(501, 5001, 5011, 400, NULL)" >/dev/null
q "SELECT gp_task_reserve(8000, 5011, 400, 501)" >/dev/null
got=$(seq 1 "$N" | awk '{printf "SELECT gp_task_award(8000, %d, %d, 10, 501)\n", 80000 + $1, 600 + $1 % 20}' | parallel_ok)
[[ $got == 40 ]] || fail "expected 40 awards to succeed, got $got"
[[ $(q "SELECT balance FROM accounts WHERE kind = 'reservation' AND owner_id = 8000") == 0 ]] || fail "reservation not 0"
[[ $(q "SELECT sum(points) FROM worker_earnings WHERE period = 'all'") == 400 ]] || fail "earnings not 400"
echo "ok: exactly 40 succeeded, reservation 0"

echo "== $N concurrent duplicate awards of one assignment"
q "SELECT gp_grant(501, 5001, 5011, 100, NULL)" >/dev/null
q "SELECT gp_task_reserve(8001, 5011, 100, 501)" >/dev/null
got=$(seq 1 "$N" | awk '{printf "SELECT gp_task_award(8001, 99999, %d, 10, 501)\n", 600 + $1 % 20}' | parallel_ok)
[[ $got == 1 ]] || fail "expected exactly 1 award, got $got"
echo "ok: paid once"

echo "== $N concurrent charges of 10 against one worker holding 50 (RELIABILITY L2)"
q "SELECT gp_adjust(501, 619, 50 - (SELECT balance FROM accounts WHERE kind = 'worker' AND owner_id = 619), 'test setup')" >/dev/null
got=$(seq 1 "$N" | awk '{printf "SELECT gp_ledger_post(%s, 619, %s, NULL, jsonb_build_array(jsonb_build_object(%s, gp_account_of(%s, 619), %s, -10), jsonb_build_object(%s, gp_account_of(%s, %d, 5001), %s, 10)))\n", "'"'"'charge'"'"'", "'"'"'{}'"'"'", "'"'"'account'"'"'", "'"'"'worker'"'"'", "'"'"'amount'"'"'", "'"'"'account'"'"'", "'"'"'merchant'"'"'", 90 + $1 % 7, "'"'"'amount'"'"'"}' | parallel_ok)
[[ $got == 5 ]] || fail "expected 5 charges to succeed, got $got"
[[ $(q "SELECT balance FROM accounts WHERE kind = 'worker' AND owner_id = 619") == 0 ]] || fail "worker not 0"
echo "ok: exactly 5 succeeded, balance 0"

echo "== 8 concurrent sweeps share 200 due vestings, each fires once"
q "INSERT INTO ledger_policies (street_unit_id, objection_period) VALUES (5001, '1 second')"
q "SELECT gp_grant(501, 5001, 5011, 2000, NULL)" >/dev/null
q "SELECT gp_task_reserve(8002, 5011, 2000, 501)" >/dev/null
q "SELECT count(gp_task_award(8002, 82000 + i, 600 + i % 20, 10, 501)) FROM generate_series(1, 200) i" >/dev/null
sleep 1.2
# Rounds of 8 parallel sweeps until nothing is due (a sweep skips a row whose worker another
# sweep holds, and the next round takes it).
: >/tmp/ledger_conc_sweeps.$$
for round in 1 2 3 4 5 6 7 8 9 10; do
    seq 1 8 | xargs -P 8 -I{} "${APP[@]}" -c "SELECT gp_ledger_sweep(50) ->> 'vested'" >>/tmp/ledger_conc_sweeps.$$ 2>&1 || true
    [[ $(q "SELECT count(*) FROM pending_points WHERE vest_txn_id IS NULL") == 0 ]] && break
done
vested=$(awk '{s += $1} END {print s}' /tmp/ledger_conc_sweeps.$$)
rm -f /tmp/ledger_conc_sweeps.$$
[[ $vested == 200 ]] || fail "expected 200 vestings, got $vested"
[[ $(q "SELECT count(*) FROM ledger_txns WHERE kind = 'vest'") == 200 ]] || fail "vest txns"
[[ $(q "SELECT count(*) FROM pending_points WHERE vest_txn_id IS NULL") == 0 ]] || fail "pending left"
echo "ok: 200 vested exactly once (in $round rounds)"

echo "== gp_accounts_lock holds every account (and worker siblings) until commit"
ids=$(q "SELECT array_agg(id ORDER BY id)::text FROM accounts WHERE (kind = 'worker' AND owner_id IN (601, 602, 603)) OR (kind = 'reservation' AND owner_id = 8000)")
"${APP[@]}" -c "BEGIN" -c "SELECT gp_accounts_lock('$ids')" -c "SELECT pg_sleep(3)" -c "COMMIT" >/dev/null &
holder=$!
# Wait until the holder sleeps with its locks, then try every account from one session (one
# psql per account took longer than the holder's sleep on a loaded machine).
for _ in $(seq 1 100); do
    [[ $(q "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(3)' AND state = 'active'") == 1 ]] && break
    sleep 0.1
done
locked=$(q "CREATE FUNCTION pg_temp.locked(p_id bigint) RETURNS boolean LANGUAGE plpgsql AS \$\$
BEGIN
    PERFORM 1 FROM accounts WHERE id = p_id FOR UPDATE NOWAIT;
    RETURN false;
EXCEPTION WHEN lock_not_available THEN
    RETURN true;
END \$\$;
SELECT count(*) FILTER (WHERE pg_temp.locked(id)) FROM accounts
 WHERE (kind IN ('worker', 'worker_pending') AND owner_id IN (601, 602, 603))
    OR (kind = 'reservation' AND owner_id = 8000)")
wait $holder
[[ $locked == 7 ]] || fail "expected 7 locked accounts, got $locked"
echo "ok: all 7 accounts were locked"

echo "== $N mixed concurrent postings over the same accounts, legs in every order: no deadlock"
# The global lock order (docs/LEDGER.md): every posting locks all its accounts in one statement,
# ascending id, worker pairs together. Awards (reservation -> worker), charges (worker ->
# merchant), refunds (merchant -> worker), three-leg transfers whose legs are given in
# descending id order, and batches of awards whose workers come in descending order all touch
# the same 10 workers, one reservation and one merchant account at once.
q "SELECT gp_grant(501, 5001, 5011, 1000, NULL)" >/dev/null
q "SELECT gp_task_reserve(8003, 5011, 1000, 501)" >/dev/null
merch=$(q "SELECT gp_account_of('merchant', 95, 5001)")
res=$(q "SELECT id FROM accounts WHERE kind = 'reservation' AND owner_id = 8003")
q "SELECT count(gp_task_award(8003, 83000 + i, 600 + i % 10, 20, 501)) FROM generate_series(0, 9) i" >/dev/null
dl0=$(q "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()")
got=$(seq 1 "$N" | awk -v m="$merch" -v r="$res" '{
    w = 600 + $1 % 10; v = 600 + ($1 * 7) % 10; k = $1 % 4
    if (k == 0) printf "SELECT gp_task_award(8003, %d, %d, 1, 501)\n", 84000 + $1, w
    else if (k == 1) printf "SELECT gp_ledger_post_legs(%ccharge%c, NULL, NULL, NULL, ARRAY[%s, gp_account_of(%cworker%c, %d)], ARRAY[1, -1])\n", 39, 39, m, 39, 39, w
    else if (k == 2) printf "SELECT gp_ledger_post_legs(%crefund%c, NULL, NULL, NULL, ARRAY[gp_account_of(%cworker%c, %d), %s], ARRAY[1, -1])\n", 39, 39, 39, 39, v, m
    else printf "SELECT gp_task_award_many(8003, ARRAY[%d, %d], ARRAY[%d, %d], 1, 501)\n", 85000 + 2 * $1, 85001 + 2 * $1, 609 - $1 % 5, 600 + $1 % 5
}' | parallel_ok)
[[ $got -ge $((N / 2)) ]] || fail "expected most mixed postings to succeed, got $got of $N"
sleep 1 # the deadlock counter is flushed when the sessions end
dl1=$(q "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()")
[[ $dl1 == "$dl0" ]] || fail "$((dl1 - dl0)) deadlocks among the mixed postings"
echo "ok: $got of $N succeeded (the rest refused for lack of points), 0 deadlocks"

echo "== invariants"
chk=$(q "SELECT gp_ledger_check()")
[[ $chk == "[]" ]] || fail "gp_ledger_check: $chk"
echo "ok: gp_ledger_check() = []"
echo "test_ledger_concurrency.sh: all checks passed"
