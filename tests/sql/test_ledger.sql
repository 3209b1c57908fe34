-- tests/sql/test_ledger.sql -- the points ledger (sql/functions/30_ledger.sql, tables in
-- sql/migrations/0003_ledger.sql).
--
-- Run against a FRESH database migrated by `gridpointsd migrate`, as the migration role (a superuser
-- in the throwaway test cluster), in autocommit mode (the sweeps need now() to move on):
--   psql -X -q -v ON_ERROR_STOP=1 -d DB -f tests/sql/test_ledger.sql
-- Every check RAISEs on failure, so ON_ERROR_STOP turns a failure into a non-zero exit.

\set QUIET on
\o /dev/null
SET client_min_messages = warning;
-- The API functions live in schema gp (sql/functions), as the server sees them.
SET search_path = gp, public;

-- expect(sql, sqlstate[, hint]): the statement must fail with this SQLSTATE (and HINT).
CREATE FUNCTION pg_temp.expect(p_sql text, p_state text, p_hint text DEFAULT NULL)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    st text;
    h text;
    m text;
BEGIN
    BEGIN
        EXECUTE p_sql;
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, h = PG_EXCEPTION_HINT, m = MESSAGE_TEXT;
        IF st <> p_state OR (p_hint IS NOT NULL AND h IS DISTINCT FROM p_hint) THEN
            RAISE EXCEPTION 'expected % %, got % % (%) for: %', p_state, p_hint, st, h, m, p_sql;
        END IF;
        RETURN;
    END;
    RAISE EXCEPTION 'expected % % but it succeeded: %', p_state, p_hint, p_sql;
END
$$;

CREATE FUNCTION pg_temp.ok(p_cond boolean, p_what text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF p_cond IS NOT TRUE THEN
        RAISE EXCEPTION 'check failed: %', p_what;
    END IF;
END
$$;

CREATE FUNCTION pg_temp.eq(p_got anyelement, p_want anyelement, p_what text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF p_got IS DISTINCT FROM p_want THEN
        RAISE EXCEPTION 'check failed: % (got %, want %)', p_what, p_got, p_want;
    END IF;
END
$$;

CREATE FUNCTION pg_temp.bal(p_worker bigint) RETURNS jsonb LANGUAGE sql AS $$
    SELECT body FROM gp_balance(p_worker, p_worker)
$$;

CREATE FUNCTION pg_temp.budget(p_unit bigint) RETURNS bigint LANGUAGE sql AS $$
    SELECT coalesce((SELECT balance FROM accounts WHERE kind = 'budget' AND owner_id = p_unit), 0)
$$;

CREATE FUNCTION pg_temp.check_clean(p_where text) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v jsonb := gp_ledger_check();
BEGIN
    IF v <> '[]' THEN
        RAISE EXCEPTION 'gp_ledger_check (%) found: %', p_where, v;
    END IF;
END
$$;

\echo '== fixtures'
-- street 1001 > community 1011 > grid 1111 > micro-grid 11111; grid 1112
--             > community 1012 > grid 1121
-- street 2001 (another street)
INSERT INTO org_units (id, parent_id, level, name) VALUES
    (1001, NULL, 'street', 'S1'), (1011, 1001, 'community', 'C1'), (1012, 1001, 'community', 'C2'),
    (1111, 1011, 'grid', 'G1'), (1112, 1011, 'grid', 'G1b'), (1121, 1012, 'grid', 'G2'),
    (11111, 1111, 'micro_grid', 'M1'), (2001, NULL, 'street', 'S2');
INSERT INTO persons (id, phone, name, unit_id, password_hash) VALUES
    (101, '13800000101', 'street admin', 1001, 'x'),
    (102, '13800000102', 'community admin C1', 1011, 'x'),
    (103, '13800000103', 'grid staff G1', 1111, 'x'),
    (104, '13800000104', 'auditor S1', 1001, 'x'),
    (105, '13800000105', 'street admin S2', 2001, 'x'),
    (106, '13800000106', 'community admin C2', 1012, 'x'),
    (201, '13800000201', 'worker G1 a', 1111, 'x'),
    (202, '13800000202', 'worker G1 b', 1111, 'x'),
    (203, '13800000203', 'worker M1', 11111, 'x'),
    (204, '13800000204', 'worker G2', 1121, 'x'),
    (205, '13800000205', 'worker S2', 2001, 'x');
INSERT INTO role_grants (person_id, role, unit_id) VALUES
    (101, 'street_admin', 1001), (102, 'community_admin', 1011), (103, 'grid_staff', 1111),
    (104, 'auditor', 1001), (105, 'street_admin', 2001), (106, 'community_admin', 1012),
    (201, 'worker', 1111), (202, 'worker', 1111), (203, 'worker', 11111), (204, 'worker', 1121),
    (205, 'worker', 2001);

SELECT pg_temp.check_clean('empty ledger');
SELECT pg_temp.eq((SELECT count(*) FROM accounts WHERE kind IN ('issuance', 'expiry', 'settlement')),
                  3::bigint, 'system accounts exist');

\echo '== issue: scope, idempotency'
SELECT pg_temp.expect($$SELECT gp_issue(102, 1001, 100, 'x')$$, 'GP404', 'unit_not_found');
SELECT pg_temp.expect($$SELECT gp_issue(104, 1001, 100, 'x')$$, 'GP403', 'forbidden');
SELECT pg_temp.expect($$SELECT gp_issue(105, 1001, 100, 'x')$$, 'GP404', 'unit_not_found');
SELECT pg_temp.expect($$SELECT gp_issue(201, 1001, 100, 'x')$$, 'GP404', 'unit_not_found');
SELECT pg_temp.expect($$SELECT gp_issue(101, 1011, 100, 'x')$$, 'GP400', 'not_a_street');
SELECT pg_temp.expect($$SELECT gp_issue(101, 1001, 0, 'x')$$, 'GP400', 'invalid_amount');
SELECT pg_temp.expect($$SELECT gp_issue(101, 1001, -5, 'x')$$, 'GP400', 'invalid_amount');

CREATE TEMP TABLE r (name text PRIMARY KEY, v jsonb);
INSERT INTO r SELECT 'issue1', gp_issue(101, 1001, 10000, '2025 budget', 'person:101', 'k-issue-1', 'h1');
INSERT INTO r SELECT 'issue1b', gp_issue(101, 1001, 10000, '2025 budget', 'person:101', 'k-issue-1', 'h1');
SELECT pg_temp.eq((SELECT v ->> 'txn_id' FROM r WHERE name = 'issue1'),
                  (SELECT v ->> 'txn_id' FROM r WHERE name = 'issue1b'), 'replay returns the same txn');
SELECT pg_temp.ok((SELECT (v ->> 'idempotent_replay')::boolean FROM r WHERE name = 'issue1b'),
                  'replay is flagged');
SELECT pg_temp.expect($$SELECT gp_issue(101, 1001, 20000, '2025 budget', 'person:101', 'k-issue-1', 'h2')$$,
                      'GP422', 'idempotency_key_reused');
SELECT pg_temp.eq(pg_temp.budget(1001), 10000::bigint, 'issued once');
SELECT pg_temp.eq((SELECT count(*) FROM ledger_txns WHERE kind = 'issue'), 1::bigint, 'one issue txn');
SELECT pg_temp.eq((SELECT count(*) FROM audit_log WHERE action = 'ledger.issue'), 1::bigint,
                  'issue audited once');
-- the street's own issuance account (0024: system accounts are per street)
SELECT pg_temp.eq((SELECT balance FROM accounts WHERE kind = 'issuance' AND owner_id = 1001),
                  -10000::bigint, 'issuance account is minus what was issued');
SELECT pg_temp.eq((SELECT street_id FROM accounts WHERE kind = 'issuance' AND owner_id = 1001),
                  1001::bigint, 'the issuance account is in its street');
SELECT pg_temp.eq((SELECT balance FROM accounts WHERE kind = 'issuance' AND owner_id = 0),
                  0::bigint, 'the legacy global issuance account is not posted to');

\echo '== grant: scope rules, idempotency'
INSERT INTO r SELECT 'g1', gp_grant(101, 1001, 1011, 3000, 'C1 budget', 'person:101', 'k-g1', 'hg1');
SELECT pg_temp.eq((SELECT (v -> 'from' ->> 'balance')::bigint FROM r WHERE name = 'g1'), 7000::bigint,
                  'grant receipt from balance');
SELECT pg_temp.eq((SELECT (v -> 'to' ->> 'balance')::bigint FROM r WHERE name = 'g1'), 3000::bigint,
                  'grant receipt to balance');
INSERT INTO r SELECT 'g1b', gp_grant(101, 1001, 1011, 3000, 'C1 budget', 'person:101', 'k-g1', 'hg1');
SELECT pg_temp.eq((SELECT v ->> 'txn_id' FROM r WHERE name = 'g1'),
                  (SELECT v ->> 'txn_id' FROM r WHERE name = 'g1b'), 'grant replay');
SELECT pg_temp.expect($$SELECT gp_grant(101, 1001, 1011, 3001, 'C1 budget', 'person:101', 'k-g1', 'other')$$,
                      'GP422', 'idempotency_key_reused');
-- the same key of another principal is another request
SELECT gp_grant(101, 1001, 1012, 10, NULL, 'person:999', 'k-g1', 'hg1');
SELECT pg_temp.eq(pg_temp.budget(1011), 3000::bigint, 'C1 granted once');
SELECT pg_temp.eq(pg_temp.budget(1012), 10::bigint, 'same key, other principal: executed');
-- a street admin may grant to any unit inside the street
SELECT gp_grant(101, 1001, 1121, 500, NULL);
-- community admin: from its community to its grids only
SELECT gp_grant(102, 1011, 1111, 1000, 'G1');
SELECT pg_temp.expect($$SELECT gp_grant(102, 1001, 1011, 10, NULL)$$, 'GP404', 'unit_not_found');
SELECT pg_temp.expect($$SELECT gp_grant(102, 1011, 1121, 10, NULL)$$, 'GP404', 'unit_not_found');
SELECT pg_temp.expect($$SELECT gp_grant(102, 1011, 1011, 10, NULL)$$, 'GP400', 'invalid_grant_target');
SELECT pg_temp.expect($$SELECT gp_grant(101, 1011, 1001, 10, NULL)$$, 'GP400', 'invalid_grant_target');
SELECT pg_temp.expect($$SELECT gp_grant(101, 1111, 1121, 10, NULL)$$, 'GP400', 'invalid_grant_target');
-- grid staff see the grid but are not community admins
SELECT pg_temp.expect($$SELECT gp_grant(103, 1011, 1111, 10, NULL)$$, 'GP404', 'unit_not_found');
SELECT gp_grant(103, 1111, 11111, 100, 'micro-grid');
-- an auditor sees everything and may grant nothing
SELECT pg_temp.expect($$SELECT gp_grant(104, 1001, 1011, 10, NULL)$$, 'GP403', 'forbidden');
SELECT pg_temp.expect($$SELECT gp_grant(105, 1001, 1011, 10, NULL)$$, 'GP404', 'unit_not_found');
SELECT pg_temp.expect($$SELECT gp_grant(201, 1111, 11111, 10, NULL)$$, 'GP404', 'unit_not_found');
SELECT pg_temp.expect($$SELECT gp_grant(102, 1011, 1112, 999999, NULL)$$, 'GP402', 'insufficient_budget');
SELECT pg_temp.expect($$SELECT gp_grant(102, 1011, 1112, 0, NULL)$$, 'GP400', 'invalid_amount');
SELECT pg_temp.eq(pg_temp.budget(1111), 900::bigint, 'G1 budget after grants');
SELECT pg_temp.eq((SELECT count(*) FROM audit_log WHERE action = 'ledger.grant'), 5::bigint,
                  'every grant audited once');

\echo '== posting primitive: legs, zero sum, overflow, negatives'
SELECT pg_temp.expect($$SELECT gp_ledger_post('grant', 1, '{}', NULL,
    jsonb_build_array(jsonb_build_object('account', gp_account_of('budget', 1111), 'amount', -5),
                      jsonb_build_object('account', gp_account_of('budget', 1112), 'amount', 4)))$$,
    'GP400', 'unbalanced_transaction');
SELECT pg_temp.expect($$SELECT gp_ledger_post('grant', 1, '{}', NULL,
    jsonb_build_array(jsonb_build_object('account', gp_account_of('budget', 1111), 'amount', -5)))$$,
    'GP400', 'invalid_legs');
SELECT pg_temp.expect($$SELECT gp_ledger_post('grant', 1, '{}', NULL,
    jsonb_build_array(jsonb_build_object('account', gp_account_of('budget', 1111), 'amount', -5),
                      jsonb_build_object('account', gp_account_of('budget', 1111), 'amount', 5)))$$,
    'GP400', 'accounts_must_be_different');
SELECT pg_temp.expect($$SELECT gp_ledger_post('grant', 1, '{}', NULL,
    jsonb_build_array(jsonb_build_object('account', gp_account_of('budget', 1111), 'amount', -1.5),
                      jsonb_build_object('account', gp_account_of('budget', 1112), 'amount', 1.5)))$$,
    'GP400', 'invalid_amount');
SELECT pg_temp.expect($$SELECT gp_ledger_post('grant', 1, '{}', NULL,
    jsonb_build_array(jsonb_build_object('account', gp_account_of('budget', 1111), 'amount', -18446744073709551616),
                      jsonb_build_object('account', gp_account_of('budget', 1112), 'amount', 18446744073709551616)))$$,
    'GP400', 'invalid_amount');
SELECT pg_temp.expect($$SELECT gp_ledger_post('grant', 1, '{}', NULL,
    jsonb_build_array(jsonb_build_object('account', gp_account_of('budget', 1111), 'amount', '-10'),
                      jsonb_build_object('account', gp_account_of('budget', 1112), 'amount', '10')))$$,
    'GP400', 'invalid_legs');
SELECT pg_temp.expect($$SELECT gp_ledger_post('grant', 1, '{}', NULL,
    jsonb_build_array(jsonb_build_object('account', gp_account_of('budget', 1111), 'amount', 0),
                      jsonb_build_object('account', gp_account_of('budget', 1112), 'amount', 0)))$$,
    'GP400', 'invalid_amount');
SELECT pg_temp.expect($$SELECT gp_ledger_post('bogus', 1, '{}', NULL,
    jsonb_build_array(jsonb_build_object('account', gp_account_of('budget', 1111), 'amount', -1),
                      jsonb_build_object('account', gp_account_of('budget', 1112), 'amount', 1)))$$,
    'GP400', 'invalid_kind');
SELECT pg_temp.expect($$SELECT gp_ledger_post('grant', 1, '{}', NULL,
    jsonb_build_array(jsonb_build_object('account', 987654321, 'amount', -1),
                      jsonb_build_object('account', gp_account_of('budget', 1112), 'amount', 1)))$$,
    'GP404', 'account_not_found');
-- a worker account never goes below zero
SELECT pg_temp.expect($$SELECT gp_ledger_post('charge', 201, '{}', NULL,
    jsonb_build_array(jsonb_build_object('account', gp_account_of('worker', 201), 'amount', -1),
                      jsonb_build_object('account', gp_account_of('merchant', 77, 1001), 'amount', 1)))$$,
    'GP402', 'insufficient_points');
-- overflow: street 2001's own issuance account (0024: per street, so street 1001's -10000 is
-- not in it) goes to -(2^63 - 1) and its budget to 2^63 - 1; then one more point overflows
SELECT gp_issue(105, 2001, 9223372036854775807 - 10000, 'nearly everything');
SELECT gp_issue(105, 2001, 10000, 'the last points');
SELECT pg_temp.eq((SELECT balance FROM accounts WHERE kind = 'issuance' AND owner_id = 2001),
                  -9223372036854775807, 'issuance at -max');
SELECT pg_temp.expect($$SELECT gp_issue(105, 2001, 1, 'one more')$$, 'GP400', 'amount_overflow');
SELECT pg_temp.eq(pg_temp.budget(2001), 9223372036854775807, 'budget kept');
SELECT pg_temp.check_clean('after primitives');

\echo '== reserve, award once, release'
SELECT gp_task_reserve(9001, 1111, 400, 103);
SELECT pg_temp.eq(pg_temp.budget(1111), 500::bigint, 'reserve takes the budget');
SELECT pg_temp.expect($$SELECT gp_task_reserve(9002, 1111, 700, 103)$$, 'GP402', 'insufficient_budget');
SELECT pg_temp.expect($$SELECT gp_task_reserve(9002, 1111, 0, 103)$$, 'GP400', 'invalid_amount');
SELECT pg_temp.expect($$SELECT gp_task_reserve(9002, 424242, 10, 103)$$, 'GP404', 'unit_not_found');
SELECT pg_temp.expect($$SELECT gp_task_reserve(9001, 1112, 1, 103)$$, 'GP409', 'reservation_unit_mismatch');
SELECT pg_temp.eq(pg_temp.budget(1111), 500::bigint, 'refused reserve changed nothing');

INSERT INTO r SELECT 'a1', gp_task_award(9001, 1, 201, 100, 103);
SELECT pg_temp.eq((SELECT (v ->> 'balance')::bigint FROM r WHERE name = 'a1'), 100::bigint, 'award balance');
SELECT pg_temp.eq((SELECT (v ->> 'version')::bigint FROM r WHERE name = 'a1'), 1::bigint, 'award version');
SELECT pg_temp.eq((SELECT (v ->> 'earned_total')::bigint FROM r WHERE name = 'a1'), 100::bigint, 'earned total');
SELECT pg_temp.eq((SELECT (v ->> 'earned_month')::bigint FROM r WHERE name = 'a1'), 100::bigint, 'earned month');
SELECT pg_temp.eq((SELECT v -> 'rank_units' FROM r WHERE name = 'a1'), '[1001, 1011, 1111]'::jsonb, 'rank units');
SELECT pg_temp.eq((SELECT v ->> 'period' FROM r WHERE name = 'a1'),
                  to_char(now() AT TIME ZONE 'Asia/Shanghai', 'YYYY-MM'), 'period in Shanghai time');
SELECT pg_temp.expect($$SELECT gp_task_award(9001, 1, 201, 100, 103)$$, 'GP409', 'already_awarded');
SELECT pg_temp.expect($$SELECT gp_task_award(9001, 1, 202, 100, 103)$$, 'GP409', 'already_awarded');
SELECT gp_task_award(9001, 2, 202, 100, 103);
SELECT gp_task_award(9001, 3, 203, 100, 103);
SELECT gp_task_award(9001, 4, 201, 100, 103);
SELECT pg_temp.expect($$SELECT gp_task_award(9001, 5, 202, 100, 103)$$, 'GP402', 'insufficient_reservation');
SELECT pg_temp.expect($$SELECT gp_task_award(9999, 6, 202, 100, 103)$$, 'GP402', 'insufficient_reservation');
SELECT pg_temp.expect($$SELECT gp_task_award(9001, 7, 999999, 100, 103)$$, 'GP404', 'person_not_found');
SELECT pg_temp.eq((pg_temp.bal(201) ->> 'available')::bigint, 200::bigint, 'worker 201 has two awards');
SELECT pg_temp.eq((pg_temp.bal(201) ->> 'version')::bigint, 2::bigint, 'worker 201 version');
-- the award path touched no budget row
SELECT pg_temp.eq((SELECT version FROM accounts WHERE kind = 'budget' AND owner_id = 1111), 3::bigint,
                  'G1 budget posted only by grant in/out and reserve');

SELECT gp_task_reserve(9002, 1111, 300, 103);
SELECT gp_task_award(9002, 21, 202, 100, 103);
SELECT pg_temp.ok(gp_task_release(9002, 1111, 103) IS NOT NULL, 'release returns a txn');
SELECT pg_temp.ok(gp_task_release(9002, 1111, 103) IS NULL, 'nothing left to release');
SELECT pg_temp.ok(gp_task_release(424242, 1111, 103) IS NULL, 'never reserved');
SELECT pg_temp.eq(pg_temp.budget(1111), 400::bigint, 'release returned the 200 not awarded');

\echo '== award_many'
SELECT gp_task_reserve(9003, 1111, 300, 103);
INSERT INTO r SELECT 'many', gp_task_award_many(9003, ARRAY[31, 32, 33], ARRAY[201, 202, 203], 100, 103);
SELECT pg_temp.eq((SELECT jsonb_array_length(v) FROM r WHERE name = 'many'), 3, 'three results');
SELECT pg_temp.eq((SELECT (v -> 0 ->> 'balance')::bigint FROM r WHERE name = 'many'), 300::bigint,
                  'first result is worker 201');
SELECT pg_temp.expect($$SELECT gp_task_award_many(9003, ARRAY[34, 31], ARRAY[201, 202], 0, 103)$$,
                      'GP400', 'invalid_amount');
SELECT pg_temp.expect($$SELECT gp_task_award_many(9003, ARRAY[34], ARRAY[201, 202], 10, 103)$$,
                      'GP400', 'invalid_request');
SELECT pg_temp.eq((SELECT balance FROM accounts WHERE kind = 'reservation' AND owner_id = 9003), 0::bigint,
                  'reservation used up');
SELECT pg_temp.check_clean('after awards');

\echo '== adjust'
INSERT INTO r SELECT 'adj1', body FROM gp_adjust(101, 201, 50, 'missed award for task 17', 'person:101', 'k-adj-1', 'ha');
SELECT pg_temp.eq((SELECT (v ->> 'available')::bigint FROM r WHERE name = 'adj1'), 350::bigint, 'adjust +50');
SELECT pg_temp.eq((SELECT v ->> 'txn_id' FROM r WHERE name = 'adj1'),
                  (gp_adjust(101, 201, 50, 'missed award for task 17', 'person:101', 'k-adj-1', 'ha')).body ->> 'txn_id',
                  'adjust replay');
-- the body is the receipt; the balance for the cache comes back separately, as an effect
DO $$
DECLARE
    x gp_reply := gp_adjust(101, 201, -25, 'duplicate payment');
BEGIN
    PERFORM pg_temp.eq(x.effects, jsonb_build_object('balances', jsonb_build_array(gp_worker_state(201))),
                       'adjust effect: the new balance for the cache');
    PERFORM pg_temp.eq((x.body ->> 'available')::bigint, 325::bigint, 'adjust body: the receipt');
END
$$;
SELECT pg_temp.eq((pg_temp.bal(201) ->> 'available')::bigint, 325::bigint, 'adjust -25');
SELECT pg_temp.expect($$SELECT gp_adjust(102, 201, 5, 'x')$$, 'GP403', 'forbidden');
SELECT pg_temp.expect($$SELECT gp_adjust(104, 201, 5, 'x')$$, 'GP403', 'forbidden');
SELECT pg_temp.expect($$SELECT gp_adjust(105, 201, 5, 'x')$$, 'GP404', 'person_not_found');
SELECT pg_temp.expect($$SELECT gp_adjust(101, 101, 5, 'me')$$, 'GP403', 'forbidden');
SELECT pg_temp.expect($$SELECT gp_adjust(101, 201, 5, '   ')$$, 'GP400', 'reason_required');
SELECT pg_temp.expect($$SELECT gp_adjust(101, 201, 5, NULL)$$, 'GP400', 'reason_required');
SELECT pg_temp.expect($$SELECT gp_adjust(101, 201, 0, 'x')$$, 'GP400', 'invalid_amount');
SELECT pg_temp.expect($$SELECT gp_adjust(101, 201, -100000, 'x')$$, 'GP402', 'insufficient_points');
SELECT pg_temp.expect($$SELECT gp_adjust(101, 201, 100000, 'x')$$, 'GP402', 'insufficient_budget');
SELECT pg_temp.eq((SELECT count(*) FROM audit_log WHERE action = 'ledger.adjust' AND reason <> ''),
                  2::bigint, 'adjustments audited with their reason');

\echo '== reads and their scope'
SELECT pg_temp.eq(((gp_balance(201, 201)).body ->> 'available')::bigint, 325::bigint, 'own balance');
SELECT pg_temp.eq(((gp_balance(103, 201)).body ->> 'available')::bigint, 325::bigint, 'grid staff read');
SELECT pg_temp.eq(((gp_balance(104, 201)).body ->> 'available')::bigint, 325::bigint, 'auditor read');
SELECT pg_temp.expect($$SELECT gp_balance(202, 201)$$, 'GP404', 'person_not_found');
SELECT pg_temp.expect($$SELECT gp_balance(106, 201)$$, 'GP404', 'person_not_found');
SELECT pg_temp.expect($$SELECT gp_statement(202, 201, NULL, NULL, NULL, NULL, 10)$$, 'GP404', 'person_not_found');
SELECT pg_temp.expect($$SELECT gp_rank(202, 201, 'grid', 'all')$$, 'GP404', 'person_not_found');

-- statement: 5 postings for 201 (awards 1, 4, 31, adjust +50, adjust -25), newest first, paged by 2
DO $$
DECLARE
    p1 jsonb := gp_statement(201, 201, NULL, NULL, NULL, NULL, 2);
    p2 jsonb;
    p3 jsonb;
BEGIN
    PERFORM pg_temp.eq(jsonb_array_length(p1 -> 'items'), 2, 'page 1 size');
    PERFORM pg_temp.eq(p1 -> 'items' -> 0 ->> 'kind', 'adjust', 'newest first');
    PERFORM pg_temp.eq((p1 -> 'items' -> 0 ->> 'amount')::bigint, -25::bigint, 'newest amount');
    PERFORM pg_temp.eq((p1 -> 'items' -> 0 ->> 'balance_after')::bigint, 325::bigint, 'balance_after');
    PERFORM pg_temp.ok(p1 ->> 'next_cursor' IS NOT NULL, 'page 1 has a cursor');
    p2 := gp_statement(201, 201, NULL, NULL, NULL, (p1 ->> 'next_cursor')::bigint, 2);
    PERFORM pg_temp.eq(jsonb_array_length(p2 -> 'items'), 2, 'page 2 size');
    PERFORM pg_temp.ok((p2 -> 'items' -> 0 ->> 'id')::bigint < (p1 -> 'items' -> 1 ->> 'id')::bigint,
                       'page 2 continues');
    p3 := gp_statement(201, 201, NULL, NULL, NULL, (p2 ->> 'next_cursor')::bigint, 2);
    PERFORM pg_temp.eq(jsonb_array_length(p3 -> 'items'), 1, 'page 3 size');
    PERFORM pg_temp.ok(p3 ->> 'next_cursor' IS NULL, 'last page');
    PERFORM pg_temp.eq(jsonb_array_length(gp_statement(201, 201, 'award', NULL, NULL, NULL, 50) -> 'items'),
                       3, 'filter by kind');
    PERFORM pg_temp.eq(jsonb_array_length(gp_statement(201, 201, NULL, now() + interval '1 hour', NULL,
                                                       NULL, 50) -> 'items'), 0, 'filter by time');
    PERFORM pg_temp.expect($q$SELECT gp_statement(201, 201, 'nope', NULL, NULL, NULL, 50)$q$,
                           'GP400', 'invalid_kind');
END
$$;

-- ranks (all time): G1 has 201 (300 awarded), 202 (300), 203 (200 via M1); C1 the same;
-- the street also nobody else (204 earned nothing)
DO $$
DECLARE
    x jsonb;
BEGIN
    x := gp_rank(203, 203, 'grid', 'all');
    PERFORM pg_temp.eq((x ->> 'points')::bigint, 200::bigint, 'rank points');
    PERFORM pg_temp.eq((x ->> 'rank')::bigint, 3::bigint, 'rank of 203');
    PERFORM pg_temp.eq((x ->> 'total')::bigint, 3::bigint, 'ranked workers');
    PERFORM pg_temp.eq((x ->> 'unit_id')::bigint, 1111::bigint, 'grid of a micro-grid worker');
    x := gp_rank(201, 201, 'street', to_char(now() AT TIME ZONE 'Asia/Shanghai', 'YYYY-MM'));
    PERFORM pg_temp.eq((x ->> 'rank')::bigint, 1::bigint, 'tie for first');
    x := gp_rank(101, 204, 'community', 'all');
    PERFORM pg_temp.eq((x ->> 'points')::bigint, 0::bigint, 'no points');
    PERFORM pg_temp.eq((x ->> 'total')::bigint, 0::bigint, 'C2 has no ranked worker');
    PERFORM pg_temp.expect($q$SELECT gp_rank(201, 201, 'planet', 'all')$q$, 'GP400', 'invalid_scope');
    PERFORM pg_temp.expect($q$SELECT gp_rank(201, 201, 'grid', '2025-13')$q$, 'GP400', 'invalid_period');
    PERFORM pg_temp.expect($q$SELECT gp_rank(205, 205, 'grid', 'all')$q$, 'GP404', 'unit_not_found');
    x := gp_rank_board(1111, 'all');
    PERFORM pg_temp.eq(jsonb_array_length(x -> 'items'), 3, 'board size');
END
$$;

-- budgets and reservations
DO $$
DECLARE
    x jsonb;
BEGIN
    x := gp_budgets(101, 1001);
    PERFORM pg_temp.eq(jsonb_array_length(x -> 'items'), 7, 'all units of street 1');
    PERFORM pg_temp.eq((x -> 'totals' ->> 'budget')::bigint + (x -> 'totals' ->> 'reserved')::bigint
                       + (SELECT sum(balance) FROM accounts WHERE kind IN ('worker', 'worker_pending')
                                                              AND owner_id IN (201, 202, 203, 204)),
                       10000::numeric, 'street 1 points are conserved (adjustments use its budget)');
    x := gp_budgets(102, 1011);
    PERFORM pg_temp.eq(jsonb_array_length(x -> 'items'), 4, 'C1 subtree');
    PERFORM pg_temp.expect($q$SELECT gp_budgets(103, 1001)$q$, 'GP404', 'unit_not_found');
    PERFORM pg_temp.expect($q$SELECT gp_budgets(201, 1111)$q$, 'GP404', 'unit_not_found');
    x := gp_budgets(101, 1001, NULL, 2);
    PERFORM pg_temp.eq(jsonb_array_length(x -> 'items'), 2, 'budgets page');
    PERFORM pg_temp.ok(x ->> 'next_cursor' IS NOT NULL, 'budgets cursor');

    x := gp_task_reservation(103, 9001);
    PERFORM pg_temp.eq((x ->> 'reserved')::bigint, 400::bigint, 'reserved');
    PERFORM pg_temp.eq((x ->> 'awarded')::bigint, 400::bigint, 'awarded');
    PERFORM pg_temp.eq((x ->> 'balance')::bigint, 0::bigint, 'reservation balance');
    PERFORM pg_temp.eq(jsonb_array_length(x -> 'postings' -> 'items'), 5, 'reservation postings');
    x := gp_task_reservation(102, 9002);
    PERFORM pg_temp.eq((x ->> 'released')::bigint, 200::bigint, 'released');
    PERFORM pg_temp.expect($q$SELECT gp_task_reservation(106, 9001)$q$, 'GP404', 'task_not_found');
    PERFORM pg_temp.expect($q$SELECT gp_task_reservation(201, 9001)$q$, 'GP404', 'task_not_found');
    PERFORM pg_temp.expect($q$SELECT gp_task_reservation(101, 123456)$q$, 'GP404', 'task_not_found');

    x := gp_ledger_snapshot(0, 2);
    PERFORM pg_temp.eq(jsonb_array_length(x -> 'items'), 2, 'snapshot page');
    PERFORM pg_temp.eq((x -> 'items' -> 0 ->> 'worker_id')::bigint, 201::bigint, 'snapshot order');
    PERFORM pg_temp.eq((x ->> 'next_cursor')::bigint, 202::bigint, 'snapshot cursor');
END
$$;
SELECT pg_temp.check_clean('after reads');

\echo '== append-only, even for the owner'
SELECT pg_temp.expect($$UPDATE ledger_txns SET memo = 'x'$$, 'GP403', 'append_only');
SELECT pg_temp.expect($$DELETE FROM ledger_txns$$, 'GP403', 'append_only');
SELECT pg_temp.expect($$UPDATE postings SET amount = amount * 2$$, 'GP403', 'append_only');
SELECT pg_temp.expect($$DELETE FROM postings$$, 'GP403', 'append_only');
SELECT pg_temp.expect($$TRUNCATE postings$$, 'GP403', 'append_only');
SELECT pg_temp.expect($$TRUNCATE ledger_txns CASCADE$$, 'GP403', 'append_only');
SELECT pg_temp.expect($$UPDATE accounts SET balance = balance + 1 WHERE kind = 'worker'$$, 'GP403', 'append_only');
SELECT pg_temp.expect($$UPDATE accounts SET owner_id = 4242, version = version + 1 WHERE kind = 'worker' AND owner_id = 201$$,
                      'GP403', 'append_only');
SELECT pg_temp.expect($$DELETE FROM accounts WHERE kind = 'worker'$$, 'GP403', 'append_only');
SELECT pg_temp.expect($$UPDATE accounts SET balance = -1, version = version + 1 WHERE kind = 'worker' AND owner_id = 201$$,
                      '23514');

-- unbalanced postings written by hand are refused at commit by the deferred trigger
DO $$
BEGIN
    BEGIN
        INSERT INTO ledger_txns (id, kind) VALUES (-1, 'adjust');
        INSERT INTO postings (txn_id, account_id, amount, account_version, balance_after)
        VALUES (-1, (SELECT id FROM accounts WHERE kind = 'expiry' AND owner_id = 0), 5, 1, 5);
        SET CONSTRAINTS ALL IMMEDIATE;
        RAISE EXCEPTION 'unbalanced posting was accepted';
    EXCEPTION WHEN SQLSTATE 'GP500' THEN
        NULL;
    END;
    BEGIN
        INSERT INTO ledger_txns (id, kind) VALUES (-2, 'adjust');
        SET CONSTRAINTS ALL IMMEDIATE;
        RAISE EXCEPTION 'transaction without postings was accepted';
    EXCEPTION WHEN SQLSTATE 'GP500' THEN
        NULL;
    END;
END
$$;
-- and a plain multi-statement transaction fails at COMMIT
\echo '(the next ERROR, unbalanced_transaction at COMMIT, is expected)'
\set ON_ERROR_STOP off
BEGIN;
INSERT INTO ledger_txns (id, kind) VALUES (-3, 'adjust');
INSERT INTO postings (txn_id, account_id, amount, account_version, balance_after)
VALUES (-3, (SELECT id FROM accounts WHERE kind = 'expiry' AND owner_id = 0), 5, 1, 5);
COMMIT;
\set ON_ERROR_STOP on
SELECT pg_temp.eq((SELECT count(*) FROM ledger_txns WHERE id < 0), 0::bigint, 'unbalanced txn not committed');

-- the checker sees tampering that bypasses the triggers (replica mode), rolled back
DO $$
DECLARE
    v jsonb;
BEGIN
    BEGIN
        SET LOCAL session_replication_role = replica;
        UPDATE accounts SET balance = balance + 7 WHERE kind = 'worker' AND owner_id = 202;
        v := gp_ledger_check();
        RAISE EXCEPTION USING ERRCODE = 'P0099', MESSAGE = v::text;
    EXCEPTION WHEN SQLSTATE 'P0099' THEN
        GET STACKED DIAGNOSTICS v = MESSAGE_TEXT;
    END;
    SET LOCAL session_replication_role = origin;
    PERFORM pg_temp.ok(v @> '[{"check": "balance_mismatch"}]' AND v @> '[{"check": "trial_balance"}]',
                       'checker reports tampering: ' || v::text);
END
$$;
SELECT pg_temp.check_clean('after tamper attempts');

\echo '== privileges of gp_app'
SET ROLE gp_app;
SELECT pg_temp.expect($$UPDATE postings SET amount = 1$$, '42501');
SELECT pg_temp.expect($$DELETE FROM postings$$, '42501');
SELECT pg_temp.expect($$UPDATE ledger_txns SET memo = 'x'$$, '42501');
SELECT pg_temp.expect($$DELETE FROM ledger_txns$$, '42501');
SELECT pg_temp.expect($$INSERT INTO ledger_txns (kind) VALUES ('adjust')$$, '42501');
SELECT pg_temp.expect($$INSERT INTO postings (txn_id, account_id, amount, account_version, balance_after) VALUES (1, 1, 1, 1, 1)$$, '42501');
SELECT pg_temp.expect($$UPDATE accounts SET balance = 0$$, '42501');
SELECT pg_temp.expect($$INSERT INTO accounts (kind, owner_id) VALUES ('worker', 4242)$$, '42501');
SELECT pg_temp.expect($$UPDATE point_lots SET remaining = 0$$, '42501');
SELECT pg_temp.expect($$UPDATE worker_earnings SET points = 0$$, '42501');
SELECT pg_temp.expect($$SELECT gp_lot_put(201, 1, 1, now(), now())$$, '42501');
-- the business functions work as gp_app
SELECT pg_temp.ok((gp_grant(101, 1001, 1112, 10, 'as app') ->> 'txn_id') IS NOT NULL, 'grant as gp_app');
SELECT pg_temp.ok((gp_task_reserve(9004, 1112, 10, 102)) IS NOT NULL, 'reserve as gp_app');
SELECT pg_temp.ok((gp_task_award(9004, 41, 204, 10, 102) ->> 'txn_id') IS NOT NULL, 'award as gp_app');
SELECT pg_temp.ok((gp_ledger_sweep(10) ->> 'vested') IS NOT NULL, 'sweep as gp_app');
SELECT pg_temp.ok(gp_ledger_check() = '[]', 'check as gp_app');
RESET ROLE;

\echo '== pending points (objection period) and expiry sweeps'
SELECT pg_temp.expect($$SELECT gp_policy_set(101, 2001, '{"objection_period": 1}')$$, 'GP404', 'unit_not_found');
SELECT pg_temp.expect($$SELECT gp_policy_set(105, 2001, '{"objection_period": "soon"}')$$, 'GP400', 'invalid_interval');
SELECT pg_temp.expect($$SELECT gp_policy_set(105, 2001, '{"objection_period": "-1 day"}')$$, 'GP400', 'invalid_interval');
SELECT pg_temp.expect($$SELECT gp_policy_set(105, 2001, '{"expiry": "never"}')$$, 'GP400', 'invalid_interval');
SELECT pg_temp.expect($$SELECT gp_policy_set(102, 1001, '{"expiry": "none"}')$$, 'GP404', 'unit_not_found');
SELECT pg_temp.expect($$SELECT gp_policy_set(104, 1001, '{"expiry": "none"}')$$, 'GP403', 'forbidden');
SELECT pg_temp.expect($$SELECT gp_policy_set(101, 1011, '{"expiry": "none"}')$$, 'GP400', 'not_a_street');
SELECT pg_temp.eq(gp_policy_set(105, 2001, '{"objection_period": 1, "expiry": "2 seconds"}') ->> 'expiry',
                  'interval', 'policy set');
SELECT pg_temp.eq((gp_policy_get(105, 2001) ->> 'objection_period_s')::bigint, 1::bigint, 'policy get');
SELECT pg_temp.eq((SELECT count(*) FROM audit_log WHERE action = 'ledger.policy_set'), 1::bigint, 'policy audited');

SELECT gp_task_reserve(9101, 2001, 1000, 105);
INSERT INTO r SELECT 'p1', gp_task_award(9101, 101, 205, 30, 105);
SELECT pg_temp.ok((SELECT (v ->> 'to_pending')::boolean FROM r WHERE name = 'p1'), 'award went pending');
SELECT pg_temp.eq((SELECT (v ->> 'pending')::bigint FROM r WHERE name = 'p1'), 30::bigint, 'pending 30');
SELECT pg_temp.eq((SELECT (v ->> 'available')::bigint FROM r WHERE name = 'p1'), 0::bigint, 'nothing available');
SELECT pg_temp.expect($$SELECT gp_ledger_post('charge', 205, '{}', NULL,
    jsonb_build_array(jsonb_build_object('account', gp_account_of('worker', 205), 'amount', -1),
                      jsonb_build_object('account', gp_account_of('merchant', 77, 1001), 'amount', 1)))$$,
    'GP402', 'insufficient_points');
SELECT pg_temp.eq((gp_ledger_sweep(100) ->> 'vested')::int, 0, 'not due yet');
SELECT pg_sleep(1.2);
DO $$
DECLARE
    s jsonb := gp_ledger_sweep(100);
BEGIN
    PERFORM pg_temp.eq((s ->> 'vested')::int, 1, 'vested once');
    PERFORM pg_temp.eq(s #>> '{effects,balances,0,worker_id}', '205', 'touched worker');
    PERFORM pg_temp.eq((s #>> '{effects,balances,0,available}')::bigint, 30::bigint, 'touched balance');
    PERFORM pg_temp.eq((s #>> '{effects,balances,0,version}')::bigint, 3::bigint, 'touched version');
END
$$;
SELECT pg_temp.eq((gp_ledger_sweep(100) ->> 'vested')::int, 0, 'a timer fires once');
SELECT pg_temp.eq((pg_temp.bal(205) ->> 'available')::bigint, 30::bigint, 'vested points available');
SELECT pg_temp.eq((pg_temp.bal(205) ->> 'pending')::bigint, 0::bigint, 'nothing pending');
SELECT pg_temp.eq((pg_temp.bal(205) ->> 'expiring_soon')::bigint, 30::bigint, 'expiring soon');
SELECT pg_temp.ok((SELECT expires_at = earned_at + interval '2 seconds' FROM point_lots WHERE worker_id = 205),
                  'lot expires 2 s after it was earned');
SELECT pg_temp.check_clean('after vesting');
SELECT pg_sleep(1.0);
DO $$
DECLARE
    s jsonb := gp_ledger_sweep(100);
BEGIN
    PERFORM pg_temp.eq((s ->> 'expired')::int, 1, 'expired once');
    PERFORM pg_temp.eq((s #>> '{effects,balances,0,available}')::bigint, 0::bigint, 'expired balance');
END
$$;
SELECT pg_temp.eq((gp_ledger_sweep(100) ->> 'expired')::int, 0, 'expiry fires once');
SELECT pg_temp.eq((SELECT sum(balance)::bigint FROM accounts WHERE kind = 'expiry'), 30::bigint,
                  'expiry accounts (the legacy one or the street''s)');
SELECT pg_temp.eq((SELECT count(*) FROM ledger_txns WHERE kind IN ('vest', 'expire')), 2::bigint, 'vest + expire txns');
SELECT pg_temp.eq((SELECT count(*) FROM outbox WHERE topic IN ('points.vested', 'points.expired')), 2::bigint,
                  'outbox messages');

-- oldest-first spending: lot A (1 h) then lot B (2 h)
SELECT gp_policy_set(105, 2001, '{"objection_period": 0, "expiry": "1 hour"}');
SELECT gp_task_award(9101, 102, 205, 40, 105);
SELECT gp_policy_set(105, 2001, '{"expiry": 7200}');
SELECT gp_task_award(9101, 103, 205, 50, 105);
-- (a merchant of the worker's street 2001: a transaction's accounts are of one street, 0024)
SELECT gp_ledger_post('charge', 205, '{"order": 1}', NULL,
    jsonb_build_array(jsonb_build_object('account', gp_account_of('worker', 205), 'amount', -60),
                      jsonb_build_object('account', gp_account_of('merchant', 78, 2001), 'amount', 60)))
  AS charge_txn \gset
-- a transaction across two streets is refused, and changes nothing
SELECT pg_temp.expect($$SELECT gp_ledger_post('charge', 205, '{"order": 2}', NULL,
    jsonb_build_array(jsonb_build_object('account', gp_account_of('worker', 205), 'amount', -1),
                      jsonb_build_object('account', gp_account_of('merchant', 77, 1001), 'amount', 1)))$$,
    'GP409', 'cross_street_transaction');
SELECT pg_temp.eq((SELECT street_id FROM ledger_txns WHERE id = :charge_txn), 2001::bigint,
                  'the charge is in the worker''s street');
SELECT pg_temp.eq(gp_worker_spend_lots(205, 60) -> 'lots',
    (SELECT jsonb_build_array(
        jsonb_build_object('lot_id', a.id, 'amount', 40, 'expires_at', a.expires_at),
        jsonb_build_object('lot_id', b.id, 'amount', 20, 'expires_at', b.expires_at))
       FROM point_lots a, point_lots b
      WHERE a.worker_id = 205 AND b.worker_id = 205 AND a.amount = 40 AND b.amount = 50),
    'spent oldest first');
SELECT pg_temp.eq((SELECT sum(remaining) FROM point_lots WHERE worker_id = 205), 30::numeric, 'lots left');
SELECT pg_temp.expect($$SELECT gp_worker_add_lot(205, $$ || :charge_txn || $$, 10)$$, 'GP400', 'invalid_lot');
-- a street policy of "end of next year" (Asia/Shanghai calendar; the last field is street_id, 0024)
SELECT pg_temp.eq(gp_lot_expiry(ROW(2001, '0', 'end_of_next_year', NULL, NULL, now(), 2001)::ledger_policies,
                                 '2025-06-01 12:00+08'), '2027-01-01 00:00+08'::timestamptz, 'end of next year');
SELECT pg_temp.eq(gp_lot_expiry(ROW(2001, '0', 'end_of_next_year', NULL, NULL, now(), 2001)::ledger_policies,
                                 '2025-12-31 23:30+08'), '2027-01-01 00:00+08'::timestamptz,
                  'end of next year, late on new year''s eve in Shanghai');
SELECT pg_temp.eq(gp_lot_expiry(ROW(2001, '0', 'end_of_next_year', NULL, NULL, now(), 2001)::ledger_policies,
                                 '2026-01-01 00:30+08'), '2028-01-01 00:00+08'::timestamptz,
                  'just after new year in Shanghai (still 2025 in UTC)');
SELECT pg_temp.ok(gp_lot_expiry(NULL::ledger_policies, now()) IS NULL, 'no policy, no expiry');
SELECT pg_temp.check_clean('after spending');

\echo '== final invariants'
SELECT pg_temp.check_clean('end');
SELECT pg_temp.eq((SELECT sum(balance) FROM accounts), 0::numeric, 'trial balance');
\echo 'test_ledger.sql: all checks passed'
