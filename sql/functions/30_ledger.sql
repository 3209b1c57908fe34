-- sql/functions/30_ledger.sql
-- The points ledger (tables, triggers and privileges: sql/migrations/0003_ledger.sql; prose:
-- docs/LEDGER.md): posting, budgets, worker balances and lots, the task seam (reserve, award,
-- release), reads and the ledger sweep. The SECURITY DEFINER functions are the only writers of
-- the ledger tables; gp_app may call them but not write the tables.

------------------------------------------------------------------------------------------
-- Transactions and postings (append-only)
------------------------------------------------------------------------------------------
CREATE FUNCTION gp_ledger_kinds() RETURNS text[] LANGUAGE sql IMMUTABLE AS $$
    SELECT ARRAY['issue', 'grant', 'reserve', 'award', 'release', 'hold', 'capture', 'charge',
                 'refund', 'expire', 'adjust', 'settle', 'vest', 'void', 'exchange']
$$;

------------------------------------------------------------------------------------------
-- Small helpers
------------------------------------------------------------------------------------------
-- Street (root unit id) of a unit.
CREATE FUNCTION gp_street_of_unit(p_unit bigint) RETURNS bigint LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN (SELECT ltree2text(subpath(path, 0, 1))::bigint FROM org_units WHERE id = p_unit);
END
$$;

-- The ancestors of a person's home unit at street, community and grid level, street first:
-- the units whose rankings the person appears in.
CREATE FUNCTION gp_rank_units(p_person bigint) RETURNS bigint[] LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN (SELECT coalesce(array_agg(a.id ORDER BY nlevel(a.path)), '{}')
              FROM persons p
              JOIN org_units u ON u.id = p.unit_id
              JOIN org_units a ON a.id = ANY (string_to_array(ltree2text(u.path), '.')::bigint[])
             WHERE p.id = p_person AND a.level IN ('street', 'community', 'grid'));
END
$$;

CREATE FUNCTION gp_period_now() RETURNS text LANGUAGE sql STABLE AS $$
    SELECT to_char(now() AT TIME ZONE 'Asia/Shanghai', 'YYYY-MM')
$$;

-- When points earned at p_earned_at under policy p expire; NULL = never.
CREATE FUNCTION gp_lot_expiry(p ledger_policies, p_earned_at timestamptz) RETURNS timestamptz
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN CASE coalesce(p.expiry, 'none')
        WHEN 'end_of_next_year' THEN
            (date_trunc('year', p_earned_at AT TIME ZONE 'Asia/Shanghai') + interval '2 years')
                AT TIME ZONE 'Asia/Shanghai'
        WHEN 'interval' THEN p_earned_at + p.expiry_after
        ELSE NULL END;
END
$$;

-- The policy of the person's street (all fields NULL when the street has none).
CREATE FUNCTION gp_policy_of_person(p_person bigint) RETURNS ledger_policies
LANGUAGE plpgsql STABLE AS $$
DECLARE
    pol ledger_policies;
BEGIN
    SELECT x.* INTO pol FROM persons p
      JOIN org_units u ON u.id = p.unit_id
      JOIN ledger_policies x ON x.street_unit_id = ltree2text(subpath(u.path, 0, 1))::bigint
     WHERE p.id = p_person;
    RETURN pol;
END
$$;

CREATE FUNCTION gp_policy_json(p_street bigint, p ledger_policies) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('street_id', p_street,
        'objection_period_s', extract(epoch FROM coalesce(p.objection_period, '0'))::bigint,
        'objection_period', coalesce(p.objection_period, '0')::text,
        'expiry', coalesce(p.expiry, 'none'),
        'expiry_after_s', extract(epoch FROM p.expiry_after)::bigint,
        'expiry_after', p.expiry_after::text,
        'updated_by', p.updated_by, 'updated_at', p.updated_at)
$$;

------------------------------------------------------------------------------------------
-- Seams: account ids, posting, locking
------------------------------------------------------------------------------------------
-- The id of the account of (kind, owner), created on demand, with the street it belongs to
-- (accounts.street_id, sql/migrations/0024_street_ledger.sql). Kinds and owners:
--   issuance, expiry, settlement: a street's unit id (the street's own system account,
--   created on demand, owner = street_id = the street), or NULL/0 for the legacy global
--   account of street 0 (0003; kept, append-only, for its history);
--   budget, care (a grid's care budget, 80_care.sql): org unit id;
--   worker, worker_pending: person id (both created together; the person's street);
--   reservation: task id; merchant: merchant id; hold: voucher/order id; clearing: exchange
--   partner id; xhold: exchange transfer id -- for these the optional p_unit is the org node
--   the account is scoped to (used only when creating; its street is the account's).
CREATE FUNCTION gp_account_of(p_kind text, p_owner bigint, p_unit bigint DEFAULT NULL)
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = gp, public, pg_temp AS $$
DECLARE
    v_owner bigint := coalesce(p_owner, 0);
    v_id bigint;
    v_unit bigint;
    v_street bigint;
BEGIN
    SELECT id INTO v_id FROM accounts WHERE kind = p_kind AND owner_id = v_owner;
    IF FOUND THEN
        RETURN v_id;
    END IF;
    IF p_kind IN ('issuance', 'expiry', 'settlement') THEN
        -- the legacy account (owner 0) always exists; a street's is made here
        SELECT id INTO v_unit FROM org_units WHERE id = v_owner AND level = 'street'
                                               AND nlevel(path) = 1;
        IF NOT FOUND THEN
            PERFORM gp_raise('404', 'unit_not_found', 'a system account belongs to a street',
                             'unit_id');
        END IF;
        v_street := v_owner;
    ELSIF p_kind IN ('budget', 'care') THEN
        SELECT id, ltree2text(subpath(path, 0, 1))::bigint INTO v_unit, v_street
          FROM org_units WHERE id = v_owner;
        IF NOT FOUND THEN
            PERFORM gp_raise('404', 'unit_not_found', 'unit not found', 'unit_id');
        END IF;
    ELSIF p_kind IN ('worker', 'worker_pending') THEN
        SELECT unit_id, street_id INTO v_unit, v_street FROM persons WHERE id = v_owner;
        IF NOT FOUND THEN
            PERFORM gp_raise('404', 'person_not_found', 'person not found', 'worker_id');
        END IF;
        -- Both at once, 'worker' first, so the available account always has the lower id.
        INSERT INTO accounts (kind, owner_id, unit_id, street_id)
        VALUES ('worker', v_owner, v_unit, v_street), ('worker_pending', v_owner, v_unit, v_street)
        ON CONFLICT (kind, owner_id) DO NOTHING;
        SELECT id INTO v_id FROM accounts WHERE kind = p_kind AND owner_id = v_owner;
        RETURN v_id;
    ELSIF p_kind IN ('reservation', 'merchant', 'hold', 'clearing', 'xhold') THEN
        IF v_owner <= 0 THEN
            PERFORM gp_raise('400', 'invalid_account', 'an owner id is required', 'owner_id');
        END IF;
        v_unit := p_unit;
        v_street := coalesce((SELECT ltree2text(subpath(path, 0, 1))::bigint FROM org_units
                               WHERE id = v_unit), 0);
    ELSE
        PERFORM gp_raise('400', 'invalid_account', 'unknown account kind', 'kind');
    END IF;
    INSERT INTO accounts (kind, owner_id, unit_id, street_id)
    VALUES (p_kind, v_owner, v_unit, v_street)
    ON CONFLICT (kind, owner_id) DO NOTHING RETURNING id INTO v_id;
    IF v_id IS NULL THEN -- a concurrent transaction created it first
        SELECT id INTO v_id FROM accounts WHERE kind = p_kind AND owner_id = v_owner;
    END IF;
    RETURN v_id;
END
$$;

-- Locks the given accounts, and the sibling of every worker account among them, in ascending id
-- order (FOR NO KEY UPDATE, what the posting UPDATE takes anyway). Call it first in a
-- transaction that will post several ledger transactions, with every account they touch.
-- (count(*) makes the locking query run to its end, so every row is locked before return.)
CREATE FUNCTION gp_accounts_lock(p_ids bigint[]) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = gp, public, pg_temp AS $$
BEGIN
    PERFORM count(*) FROM (
        SELECT id FROM accounts
         WHERE id IN (SELECT unnest(p_ids)
                      UNION
                      SELECT s.id FROM accounts a
                        JOIN accounts s ON s.owner_id = a.owner_id
                                       AND s.kind IN ('worker', 'worker_pending')
                       WHERE a.id = ANY (p_ids) AND a.kind IN ('worker', 'worker_pending'))
         ORDER BY id FOR NO KEY UPDATE) x;
END
$$;

-- Like gp_accounts_lock for one worker's pair, but skips instead of waiting: false when another
-- transaction holds either account. For sweeps, which hold timer rows already.
CREATE FUNCTION gp_worker_try_lock(p_worker bigint) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = gp, public, pg_temp AS $$
BEGIN
    RETURN (SELECT count(*) = 2 FROM (
        SELECT id FROM accounts WHERE kind IN ('worker', 'worker_pending') AND owner_id = p_worker
         ORDER BY id FOR NO KEY UPDATE SKIP LOCKED) x);
END
$$;

-- The posting core (issue 12: each essential write once). Legs: p_accounts[i] receives
-- p_amounts[i] (signed). At least two legs, distinct accounts, non-zero amounts summing to zero.
-- Two statements: (1) lock every leg's account and the sibling of every worker account among
-- them, in ascending id (the global lock order, docs/LEDGER.md), reading their newest balances
-- and streets; the legs are checked against them here, under the locks (no account but
-- 'issuance'/'clearing' below zero: GP402; no overflow: GP400; a missing account: GP404; the
-- first failing account in id order is the one reported; all accounts in one street, legacy
-- street-0 system accounts going with any: else GP409 cross_street_transaction); (2) one
-- statement inserts the ledger transaction, applies every leg in one UPDATE ... FROM unnest and
-- inserts the postings (account's new version and balance), both with that street.
-- Returns the transaction id and, for every locked account (legs and siblings) in id order, its
-- kind, owner and balance/version after the posting: callers build their replies from these
-- without reading the accounts again. SECURITY DEFINER like gp_ledger_post_legs (the merchant
-- functions, which run as gp_app, call it directly): it can do nothing that one cannot.
CREATE FUNCTION gp_ledger_post_core(p_kind text, p_actor bigint, p_refs jsonb, p_memo text,
                                    p_accounts bigint[], p_amounts bigint[],
                                    p_idem_principal text, p_idem_key text,
                                    OUT txn_id bigint, OUT ids bigint[], OUT kinds text[],
                                    OUT owners bigint[], OUT balances bigint[],
                                    OUT versions bigint[])
LANGUAGE plpgsql SECURITY DEFINER SET search_path = gp, public, pg_temp AS $$
DECLARE
    v_n int := coalesce(cardinality(p_accounts), 0);
    v_bad_amount boolean := false;
    v_distinct int;
    v_sum numeric := 0;
    v_amt bigint;
    v_new numeric;
    v_fail int;        -- index (in ids) of the first refused account
    v_missing bigint;  -- smallest leg account id that does not exist
    v_streets bigint[];
    v_street bigint := 0; -- the transaction's street: its accounts' (0: legacy system only)
    k int;
BEGIN
    IF p_kind IS NULL OR p_kind NOT IN ('issue', 'grant', 'reserve', 'award', 'release', 'hold',
            'capture', 'charge', 'refund', 'expire', 'adjust', 'settle', 'vest', 'void',
            'exchange') THEN
        PERFORM gp_raise('400', 'invalid_kind', 'unknown transaction kind', 'kind');
    END IF;
    IF v_n < 2 OR v_n <> coalesce(cardinality(p_amounts), 0) THEN
        PERFORM gp_raise('400', 'invalid_legs', 'a transaction needs at least two legs', 'legs');
    END IF;
    IF v_n = 2 THEN -- the common case, without a query
        v_bad_amount := p_amounts[1] IS NULL OR p_amounts[1] = 0
                        OR p_amounts[2] IS NULL OR p_amounts[2] = 0;
        v_distinct := CASE WHEN p_accounts[1] IS NULL OR p_accounts[2] IS NULL THEN 1
                           WHEN p_accounts[1] = p_accounts[2] THEN 1 ELSE 2 END;
        v_sum := p_amounts[1]::numeric + p_amounts[2];
    ELSE
        SELECT bool_or(m IS NULL OR m = 0), count(DISTINCT x), sum(m::numeric)
          INTO v_bad_amount, v_distinct, v_sum FROM unnest(p_accounts, p_amounts) AS l (x, m);
    END IF;
    IF v_bad_amount THEN
        PERFORM gp_raise('400', 'invalid_amount', 'amounts must be non-zero integers', 'amount');
    END IF;
    IF v_distinct <> v_n THEN -- count(DISTINCT) also skips NULLs
        PERFORM gp_raise('400', 'accounts_must_be_different',
                         'each leg must name a different account', 'account');
    END IF;
    IF v_sum <> 0 THEN
        PERFORM gp_raise('400', 'unbalanced_transaction', 'postings must sum to zero', 'legs');
    END IF;
    IF length(p_memo) > 500 THEN
        PERFORM gp_raise('400', 'memo_too_long', 'the memo is longer than 500 characters', 'memo');
    END IF;

    -- (1) Lock, ascending id: the legs and the siblings of worker accounts. FOR NO KEY UPDATE
    -- returns each row's newest version (after waiting for a concurrent updater), so the checks
    -- below are race-free.
    SELECT array_agg(x.id ORDER BY x.id), array_agg(x.kind ORDER BY x.id),
           array_agg(x.owner_id ORDER BY x.id), array_agg(x.balance ORDER BY x.id),
           array_agg(x.version ORDER BY x.id), array_agg(x.street_id ORDER BY x.id)
      INTO ids, kinds, owners, balances, versions, v_streets
      FROM (SELECT a.id, a.kind, a.owner_id, a.balance, a.version, a.street_id FROM accounts a
             WHERE a.id IN (SELECT unnest(p_accounts)
                            UNION
                            SELECT s.id FROM accounts w
                              JOIN accounts s ON s.owner_id = w.owner_id
                                             AND s.kind IN ('worker', 'worker_pending')
                             WHERE w.id = ANY (p_accounts)
                               AND w.kind IN ('worker', 'worker_pending'))
             ORDER BY a.id FOR NO KEY UPDATE) x;

    FOR k IN 1 .. v_n LOOP
        IF NOT (p_accounts[k] = ANY (coalesce(ids, '{}'))) THEN
            v_missing := least(v_missing, p_accounts[k]);
        END IF;
    END LOOP;
    FOR k IN 1 .. coalesce(cardinality(ids), 0) LOOP
        EXIT WHEN v_missing < ids[k];
        IF v_streets[k] <> 0 THEN
            IF v_street = 0 THEN
                v_street := v_streets[k];
            ELSIF v_street <> v_streets[k] THEN
                PERFORM gp_raise('409', 'cross_street_transaction',
                                 'the accounts of a transaction must belong to one street',
                                 'account');
            END IF;
        END IF;
        v_amt := p_amounts[array_position(p_accounts, ids[k])];
        CONTINUE WHEN v_amt IS NULL; -- a sibling, locked only
        v_new := balances[k]::numeric + v_amt;
        IF v_new NOT BETWEEN -9223372036854775808 AND 9223372036854775807 THEN
            PERFORM gp_raise('400', 'amount_overflow', 'the amount would overflow the balance',
                             'amount');
        END IF;
        IF v_new < 0 AND kinds[k] NOT IN ('issuance', 'clearing') THEN
            PERFORM gp_raise('402',
                CASE kinds[k] WHEN 'budget' THEN 'insufficient_budget'
                              WHEN 'reservation' THEN 'insufficient_reservation'
                              ELSE 'insufficient_points' END,
                CASE kinds[k] WHEN 'budget' THEN 'the budget cannot cover this amount'
                              WHEN 'reservation' THEN 'the task reservation cannot cover this amount'
                              ELSE 'not enough points' END,
                'amount');
        END IF;
        balances[k] := v_new;
        versions[k] := versions[k] + 1;
    END LOOP;
    IF v_missing IS NOT NULL THEN
        PERFORM gp_raise('404', 'account_not_found', format('account %s not found', v_missing),
                         'account');
    END IF;

    -- (2) One statement: the transaction, every leg's balance, the postings (ascending account
    -- id, as the locks were taken).
    WITH t AS (
        INSERT INTO ledger_txns (kind, actor_id, refs, memo, idem_principal, idem_key, street_id)
        VALUES (p_kind, p_actor, coalesce(p_refs, '{}'), p_memo,
                CASE WHEN p_idem_key IS NOT NULL THEN p_idem_principal END,
                CASE WHEN p_idem_principal IS NOT NULL THEN p_idem_key END, v_street)
        RETURNING id),
    u AS (
        UPDATE accounts a SET balance = a.balance + l.amt, version = a.version + 1
          FROM unnest(p_accounts, p_amounts) AS l (acc, amt)
         WHERE a.id = l.acc
        RETURNING a.id, l.amt, a.version, a.balance),
    p AS (
        INSERT INTO postings (txn_id, account_id, amount, account_version, balance_after,
                              street_id)
        SELECT t.id, u.id, u.amt, u.version, u.balance, v_street FROM t, u ORDER BY u.id)
    SELECT t.id INTO txn_id FROM t;
END
$$;

-- The posting primitive, array form (used by the functions of this file; cheaper than jsonb):
-- gp_ledger_post_core's checks and writes. Returns the ledger transaction id.
CREATE FUNCTION gp_ledger_post_legs(p_kind text, p_actor bigint, p_refs jsonb, p_memo text,
                                    p_accounts bigint[], p_amounts bigint[],
                                    p_idem_principal text DEFAULT NULL,
                                    p_idem_key text DEFAULT NULL)
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = gp, public, pg_temp AS $$
BEGIN
    RETURN (gp_ledger_post_core(p_kind, p_actor, p_refs, p_memo, p_accounts, p_amounts,
                                p_idem_principal, p_idem_key)).txn_id;
END
$$;

-- The posting primitive, jsonb form: p_legs = [{"account": id, "amount": signed int64}, ...].
CREATE FUNCTION gp_ledger_post(p_kind text, p_actor bigint, p_refs jsonb, p_memo text,
                               p_legs jsonb, p_idem_principal text DEFAULT NULL,
                               p_idem_key text DEFAULT NULL)
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = gp, public, pg_temp AS $$
DECLARE
    v_acc bigint[] := '{}';
    v_amt bigint[] := '{}';
    l jsonb;
    n numeric;
    x numeric;
BEGIN
    IF p_legs IS NULL OR jsonb_typeof(p_legs) <> 'array' THEN
        PERFORM gp_raise('400', 'invalid_legs', 'legs must be an array', 'legs');
    END IF;
    FOR l IN SELECT * FROM jsonb_array_elements(p_legs) LOOP
        IF jsonb_typeof(l) <> 'object' OR jsonb_typeof(l -> 'account') IS DISTINCT FROM 'number'
           OR jsonb_typeof(l -> 'amount') IS DISTINCT FROM 'number' THEN
            PERFORM gp_raise('400', 'invalid_legs', 'each leg needs a numeric account and amount',
                             'legs');
        END IF;
        x := (l ->> 'account')::numeric;
        n := (l ->> 'amount')::numeric;
        IF x <> trunc(x) OR x < 1 OR x > 9223372036854775807 THEN
            PERFORM gp_raise('400', 'invalid_legs', 'invalid account id', 'account');
        END IF;
        IF n <> trunc(n) OR n = 0 OR n < -9223372036854775807 OR n > 9223372036854775807 THEN
            PERFORM gp_raise('400', 'invalid_amount',
                             'amounts must be non-zero 64-bit integers', 'amount');
        END IF;
        v_acc := v_acc || x::bigint;
        v_amt := v_amt || n::bigint;
    END LOOP;
    RETURN gp_ledger_post_legs(p_kind, p_actor, p_refs, p_memo, v_acc, v_amt,
                               p_idem_principal, p_idem_key);
END
$$;

-- A worker's combined state as the cache stores it. version = sum of the versions of the
-- worker's two accounts: it grows by one with every posting to either, and both are locked
-- together by every posting, so one version always means one (available, pending) pair.
-- p_street, when the caller knows the worker's street (persons.street_id), is added to the
-- query so that it names its shard (docs/SCALING.md); the result is the same.
CREATE FUNCTION gp_worker_state(p_worker bigint, p_street bigint DEFAULT NULL) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    st jsonb;
BEGIN
    IF p_street IS NULL THEN
        SELECT jsonb_build_object('worker_id', p_worker,
                   'available', coalesce(sum(balance) FILTER (WHERE kind = 'worker'), 0),
                   'balance', coalesce(sum(balance) FILTER (WHERE kind = 'worker'), 0),
                   'pending', coalesce(sum(balance) FILTER (WHERE kind = 'worker_pending'), 0),
                   'version', coalesce(sum(version), 0))
          INTO st
          FROM accounts WHERE kind IN ('worker', 'worker_pending') AND owner_id = p_worker;
    ELSE
        SELECT jsonb_build_object('worker_id', p_worker,
                   'available', coalesce(sum(balance) FILTER (WHERE kind = 'worker'), 0),
                   'balance', coalesce(sum(balance) FILTER (WHERE kind = 'worker'), 0),
                   'pending', coalesce(sum(balance) FILTER (WHERE kind = 'worker_pending'), 0),
                   'version', coalesce(sum(version), 0))
          INTO st
          FROM accounts WHERE kind IN ('worker', 'worker_pending') AND owner_id = p_worker
                          AND street_id = p_street;
    END IF;
    RETURN st;
END
$$;

-- The effect that puts these workers' balances into the cache: {"balances": [state, ...]}.
CREATE FUNCTION gp_fx_balances(p_workers bigint[]) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('balances',
        (SELECT coalesce(jsonb_agg(gp_worker_state(w) ORDER BY w), '[]')
           FROM (SELECT DISTINCT unnest(p_workers) AS w) x))
$$;

-- A worker's cache state (gp_worker_state's shape) from what a posting locked: the OUT arrays of
-- gp_ledger_post_core, which hold both accounts of every worker it touched. No query.
CREATE FUNCTION gp_posted_worker_state(p_worker bigint, p_kinds text[], p_owners bigint[],
                                       p_balances bigint[], p_versions bigint[])
RETURNS jsonb LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    v_avail bigint := 0;
    v_pend bigint := 0;
    v_ver bigint := 0;
    k int;
BEGIN
    FOR k IN 1 .. coalesce(cardinality(p_owners), 0) LOOP
        IF p_owners[k] = p_worker AND p_kinds[k] = 'worker' THEN
            v_avail := p_balances[k];
            v_ver := v_ver + p_versions[k];
        ELSIF p_owners[k] = p_worker AND p_kinds[k] = 'worker_pending' THEN
            v_pend := p_balances[k];
            v_ver := v_ver + p_versions[k];
        END IF;
    END LOOP;
    RETURN jsonb_build_object('worker_id', p_worker, 'available', v_avail, 'balance', v_avail,
                              'pending', v_pend, 'version', v_ver);
END
$$;

------------------------------------------------------------------------------------------
-- Lots (expiring points)
------------------------------------------------------------------------------------------
CREATE FUNCTION gp_lot_put(p_worker bigint, p_txn bigint, p_amount bigint,
                           p_earned_at timestamptz, p_expires_at timestamptz,
                           p_street bigint DEFAULT NULL)
RETURNS bigint LANGUAGE sql SECURITY DEFINER SET search_path = gp, public, pg_temp AS $$
    INSERT INTO point_lots AS l (worker_id, earned_txn_id, amount, remaining, earned_at, expires_at,
                                 street_id) -- NULL: filled from the worker (0019)
    VALUES (p_worker, p_txn, p_amount, p_amount, p_earned_at, p_expires_at, p_street)
    ON CONFLICT (worker_id, expires_at) DO UPDATE
       SET amount = l.amount + EXCLUDED.amount, remaining = l.remaining + EXCLUDED.remaining
    RETURNING id
$$;

-- Records p_amount points just credited to the worker's available account by p_txn as an
-- expiring lot, per the worker's street policy (nothing when points do not expire there).
-- For callers that credit a worker (e.g. a refund or a voided hold coming back): call it in the
-- same transaction, after the posting. Returns the lot id or NULL.
CREATE FUNCTION gp_worker_add_lot(p_worker bigint, p_txn bigint, p_amount bigint,
                                  p_earned_at timestamptz DEFAULT now())
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = gp, public, pg_temp AS $$
DECLARE
    v_exp timestamptz := gp_lot_expiry(gp_policy_of_person(p_worker), p_earned_at);
BEGIN
    IF v_exp IS NULL OR p_amount IS NULL OR p_amount <= 0 THEN
        RETURN NULL;
    END IF;
    -- Only points that p_txn really credited to the worker's available account can become a
    -- lot (a lot makes points expire, so it must not be invented).
    IF NOT EXISTS (SELECT 1 FROM postings p JOIN accounts a ON a.id = p.account_id
                    WHERE p.txn_id = p_txn AND a.kind = 'worker' AND a.owner_id = p_worker
                      AND p.amount >= p_amount) THEN
        PERFORM gp_raise('400', 'invalid_lot',
                         'the transaction did not credit the worker with this amount', 'txn_id');
    END IF;
    RETURN gp_lot_put(p_worker, p_txn, p_amount, p_earned_at, v_exp);
END
$$;

-- Consumes p_amount points of the worker's expiring lots, oldest expiry first (points without a
-- lot never expire and are spent last). Call it in every transaction that debits a worker's
-- available account (hold, charge, negative adjust), AFTER gp_ledger_post(_legs): the posting
-- has then locked the worker's accounts, and locking accounts before lots is the global order.
-- Returns {"worker_id", "amount", "from_lots", "lots": [{"lot_id", "amount", "expires_at"}]}.
CREATE FUNCTION gp_worker_spend_lots(p_worker bigint, p_amount bigint)
RETURNS jsonb LANGUAGE plpgsql SECURITY DEFINER SET search_path = gp, public, pg_temp AS $$
BEGIN
    IF p_amount IS NULL OR p_amount <= 0 THEN
        PERFORM gp_raise('400', 'invalid_amount', 'the amount must be positive', 'amount');
    END IF;
    PERFORM gp_accounts_lock(ARRAY(SELECT id FROM accounts WHERE kind = 'worker'
                                                              AND owner_id = p_worker));
    RETURN gp_lots_spend(p_worker, p_amount);
END
$$;

-- gp_worker_spend_lots without its lock, for the functions of the ledger and merchant modules
-- that call it right after a posting debited the worker (gp_ledger_post_core locked the pair).
-- SECURITY DEFINER like gp_worker_spend_lots (the merchant functions run as gp_app).
CREATE FUNCTION gp_lots_spend(p_worker bigint, p_amount bigint) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path = gp, public, pg_temp AS $$
DECLARE
    v_left bigint := p_amount;
    v_take bigint;
    v_lots jsonb := '[]';
    l record;
BEGIN
    FOR l IN SELECT id, remaining, expires_at FROM point_lots
              WHERE worker_id = p_worker AND remaining > 0
              ORDER BY expires_at, id FOR UPDATE LOOP
        v_take := least(l.remaining, v_left);
        UPDATE point_lots SET remaining = remaining - v_take WHERE id = l.id;
        v_lots := v_lots || jsonb_build_object('lot_id', l.id, 'amount', v_take,
                                               'expires_at', l.expires_at);
        v_left := v_left - v_take;
        EXIT WHEN v_left = 0;
    END LOOP;
    RETURN jsonb_build_object('worker_id', p_worker, 'amount', p_amount,
                              'from_lots', p_amount - v_left, 'lots', v_lots);
END
$$;

------------------------------------------------------------------------------------------
-- Task seams (called by sql/0004_tasks.sql inside its own business functions, which check the
-- actor's scope; these do not)
------------------------------------------------------------------------------------------
-- Reserves p_amount of unit p_unit's budget for task p_task (kind 'reserve': budget(unit) ->
-- reservation(task)). GP402 insufficient_budget when the budget cannot cover it. May be called
-- again for the same task (more slots); the reservation stays bound to its first unit.
CREATE FUNCTION gp_task_reserve(p_task bigint, p_unit bigint, p_amount bigint, p_actor bigint)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    v_budget bigint;
    v_res bigint;
    v_unit bigint;
BEGIN
    IF p_amount IS NULL OR p_amount <= 0 THEN
        PERFORM gp_raise('400', 'invalid_amount', 'the amount must be positive', 'amount');
    END IF;
    IF p_task IS NULL OR p_task <= 0 THEN
        PERFORM gp_raise('400', 'invalid_task', 'a task id is required', 'task_id');
    END IF;
    v_budget := gp_account_of('budget', p_unit); -- 404 unit_not_found first
    v_res := gp_account_of('reservation', p_task, p_unit);
    SELECT unit_id INTO v_unit FROM accounts WHERE id = v_res;
    IF v_unit IS DISTINCT FROM p_unit THEN
        PERFORM gp_raise('409', 'reservation_unit_mismatch',
                         'the task is reserved against another unit''s budget', 'unit_id');
    END IF;
    RETURN gp_ledger_post_legs('reserve', p_actor,
        jsonb_build_object('task_id', p_task, 'unit_id', p_unit), NULL,
        ARRAY[v_budget, v_res], ARRAY[-p_amount, p_amount]);
END
$$;

-- Pays p_amount from account p_from to a worker (kind 'award': -> worker, or -> worker_pending
-- when the worker's street has an objection period), with p_refs naming what is paid (a
-- task's assignment_id, or a care visit's care_visit_id: each paid at most once, by a unique
-- index). The one award step of the task seam and of care visits (80_care.sql). Returns
-- {"txn_id", "worker_id", "balance" (= "available"), "pending", "version", "to_pending",
--  "earned_month", "earned_total", "period", "rank_units": [street, community, grid],
--  "amount"} plus p_refs; the caller puts it in its "awards" effect.
CREATE FUNCTION gp_award_from(p_from bigint, p_refs jsonb, p_worker bigint, p_amount bigint,
                              p_actor bigint)
RETURNS jsonb LANGUAGE plpgsql SECURITY DEFINER SET search_path = gp, public, pg_temp AS $$
DECLARE
    v_now timestamptz := now();
    v_found boolean;
    v_acc bigint;
    v_pending_acc bigint;
    v_pol ledger_policies;
    v_rank bigint[];
    v_street bigint;
    v_pending boolean;
    v_expires timestamptz;
    v_period text := to_char(v_now AT TIME ZONE 'Asia/Shanghai', 'YYYY-MM');
    v_month bigint;
    v_total bigint;
    r record;
BEGIN
    IF p_amount IS NULL OR p_amount <= 0 THEN
        PERFORM gp_raise('400', 'invalid_amount', 'the amount must be positive', 'amount');
    END IF;
    -- One read: the person, their street's policy, their two accounts, their ranking units.
    SELECT true, p.street_id, pol.objection_period, pol.expiry, pol.expiry_after,
           (SELECT id FROM accounts WHERE kind = 'worker' AND owner_id = p.id),
           (SELECT id FROM accounts WHERE kind = 'worker_pending' AND owner_id = p.id),
           (SELECT coalesce(array_agg(x.id ORDER BY nlevel(x.path)), '{}')
              FROM org_units u
              JOIN org_units x ON x.id = ANY (string_to_array(ltree2text(u.path), '.')::bigint[])
             WHERE u.id = p.unit_id AND x.level IN ('street', 'community', 'grid'))
      INTO v_found, v_street, v_pol.objection_period, v_pol.expiry, v_pol.expiry_after, v_acc, v_pending_acc, v_rank
      FROM persons p LEFT JOIN ledger_policies pol ON pol.street_unit_id = p.street_id
     WHERE p.id = p_worker;
    IF v_found IS NULL THEN
        PERFORM gp_raise('404', 'person_not_found', 'person not found', 'worker_id');
    END IF;
    v_pending := coalesce(v_pol.objection_period > interval '0', false);
    v_expires := gp_lot_expiry(v_pol, v_now);
    IF v_acc IS NULL OR v_pending_acc IS NULL THEN -- the worker's first points
        v_acc := gp_account_of('worker', p_worker);
        v_pending_acc := gp_account_of('worker_pending', p_worker);
    END IF;

    r := gp_ledger_post_core('award', p_actor, p_refs || jsonb_build_object('worker_id', p_worker),
        NULL, ARRAY[p_from, CASE WHEN v_pending THEN v_pending_acc ELSE v_acc END],
        ARRAY[-p_amount, p_amount], NULL, NULL);

    IF v_pending THEN
        INSERT INTO pending_points (award_txn_id, worker_id, amount, earned_at, due_at, expires_at,
                                    street_id)
        VALUES (r.txn_id, p_worker, p_amount, v_now, v_now + v_pol.objection_period, v_expires,
                v_street);
    ELSIF v_expires IS NOT NULL THEN
        PERFORM gp_lot_put(p_worker, r.txn_id, p_amount, v_now, v_expires, v_street);
    END IF;

    WITH up AS (
        INSERT INTO worker_earnings AS e (person_id, period, points, street_id)
        VALUES (p_worker, v_period, p_amount, v_street), (p_worker, 'all', p_amount, v_street)
        ON CONFLICT (person_id, period) DO UPDATE SET points = e.points + EXCLUDED.points
        RETURNING e.period, e.points)
    SELECT max(points) FILTER (WHERE period <> 'all'), max(points) FILTER (WHERE period = 'all')
      INTO v_month, v_total FROM up;

    -- The worker's state after the posting, from what the posting locked (both accounts).
    RETURN gp_posted_worker_state(p_worker, r.kinds, r.owners, r.balances, r.versions)
        || p_refs || jsonb_build_object(
        'txn_id', r.txn_id, 'amount', p_amount,
        'to_pending', v_pending, 'earned_month', v_month, 'earned_total', v_total,
        'period', v_period, 'rank_units', to_jsonb(v_rank));
END
$$;

-- Pays one approved assignment from the task's reservation (gp_award_from). At most once per
-- assignment: GP409 already_awarded (and a unique index as the backstop). Touches no shared
-- row: only the task's reservation account and the worker's own rows. Returns gp_award_from's
-- jsonb with task_id and assignment_id; after commit the caller calls
-- ledger_cache_put(worker_id, available, pending, version) and ledger_rank_put for period and
-- 'all' (the "awards" effect).
CREATE FUNCTION gp_task_award(p_task bigint, p_assignment bigint, p_worker bigint,
                              p_amount bigint, p_actor bigint)
RETURNS jsonb LANGUAGE plpgsql SECURITY DEFINER SET search_path = gp, public, pg_temp AS $$
DECLARE
    v_res bigint;
    v_paid boolean;
BEGIN
    IF p_amount IS NULL OR p_amount <= 0 THEN
        PERFORM gp_raise('400', 'invalid_amount', 'the amount must be positive', 'amount');
    END IF;
    IF p_assignment IS NULL THEN
        PERFORM gp_raise('400', 'invalid_assignment', 'an assignment id is required',
                         'assignment_id');
    END IF;
    SELECT EXISTS (SELECT 1 FROM ledger_txns
                    WHERE kind = 'award' AND refs ->> 'assignment_id' = p_assignment::text),
           (SELECT id FROM accounts WHERE kind = 'reservation' AND owner_id = p_task)
      INTO v_paid, v_res;
    IF v_paid THEN
        PERFORM gp_raise('409', 'already_awarded', 'this assignment has already been paid',
                         'assignment_id');
    END IF;
    IF v_res IS NULL THEN
        PERFORM gp_raise('402', 'insufficient_reservation', 'the task has no reservation',
                         'task_id');
    END IF;
    RETURN gp_award_from(v_res, jsonb_build_object('task_id', p_task, 'assignment_id', p_assignment),
                         p_worker, p_amount, p_actor);
END
$$;

-- Many awards of one task in one transaction (the auto-approval sweep), set-based (issue 12
-- part 3): a fixed number of statements whatever the batch size.
--   (1) workers without accounts get them (gp_account_of; a read when every worker has them);
--   (2) ONE lock statement: the task's reservation and every worker's pair, ascending id,
--       FOR NO KEY UPDATE SKIP LOCKED (the global lock order, docs/LEDGER.md; a sweep skips,
--       never waits): a worker with either account busy is not paid this time (its assignment
--       stays due and the next sweep pays it); a busy reservation pays nobody this time;
--   (3) ONE read of the inputs: person, street policy, ranking units, the exactly-once probe
--       (GP409 already_awarded; the unique index ledger_txns_award_once is the backstop), the
--       reservation's cover (GP402), overflow (GP400);
--   (4) ONE write statement: N ledger_txns, 2N postings with running balance_after and
--       account_version (the reservation's across its N postings in transaction order, a window
--       sum; each worker account's likewise), one UPDATE of each account (the reservation
--       once), the pending_points / point_lots of the policy, the earnings (one upsert row per
--       worker and period), and the reply.
-- All or nothing for the workers it pays. Returns, in input order, one gp_task_award-shaped
-- jsonb per assignment PAID (a skipped one is absent: the caller moves only the assignments
-- named in the reply).
-- Every transaction and posting of the batch carries the street of the task's reservation
-- account (v_street, read with the locks in (2); one street per transaction, 0024).
CREATE FUNCTION gp_task_award_many(p_task bigint, p_assignments bigint[], p_workers bigint[],
                                   p_amount bigint, p_actor bigint)
RETURNS jsonb LANGUAGE plpgsql SECURITY DEFINER SET search_path = gp, public, pg_temp AS $$
DECLARE
    v_n int := coalesce(cardinality(p_assignments), 0);
    v_now timestamptz := now();
    v_period text := to_char(now() AT TIME ZONE 'Asia/Shanghai', 'YYYY-MM');
    v_new bigint;
    v_res bigint;
    v_street bigint; -- the reservation's (the task's) street: its transactions' and postings'
    l_st bigint[];
    l_ids bigint[];
    l_kinds text[];
    l_owners bigint[];
    l_bal bigint[];
    l_ver bigint[];
    v_err text;
    v_err_asg bigint;
    v_cover numeric;
    v_overflow boolean;
    v_paid int;
    -- the awards to pay, in input order
    a_asg bigint[];
    a_w bigint[];
    a_dest bigint[];
    a_pend boolean[];
    a_due timestamptz[];
    a_exp timestamptz[];
    a_street bigint[];
    a_rank jsonb[];
    v_out jsonb;
BEGIN
    IF p_amount IS NULL OR p_amount <= 0 THEN
        PERFORM gp_raise('400', 'invalid_amount', 'the amount must be positive', 'amount');
    END IF;
    IF v_n <> coalesce(cardinality(p_workers), 0) THEN
        PERFORM gp_raise('400', 'invalid_request',
                         'assignments and workers must have the same length', 'workers');
    END IF;
    IF v_n = 0 THEN
        RETURN '[]';
    END IF;
    IF array_position(p_assignments, NULL) IS NOT NULL THEN
        PERFORM gp_raise('400', 'invalid_assignment', 'an assignment id is required',
                         'assignment_id');
    END IF;
    -- (1) Workers without accounts yet get them first (gp_account_of takes no lock on others).
    FOR v_new IN SELECT p.id FROM persons p
                   WHERE p.id = ANY (p_workers)
                     AND NOT EXISTS (SELECT 1 FROM accounts a
                                      WHERE a.kind = 'worker' AND a.owner_id = p.id) LOOP
        PERFORM gp_account_of('worker', v_new);
    END LOOP;

    -- (2) Lock, ascending id, skipping what another transaction holds.
    SELECT array_agg(x.id ORDER BY x.id), array_agg(x.kind ORDER BY x.id),
           array_agg(x.owner_id ORDER BY x.id), array_agg(x.balance ORDER BY x.id),
           array_agg(x.version ORDER BY x.id), array_agg(x.street_id ORDER BY x.id)
      INTO l_ids, l_kinds, l_owners, l_bal, l_ver, l_st
      FROM (SELECT a.id, a.kind, a.owner_id, a.balance, a.version, a.street_id FROM accounts a
             WHERE a.id IN (SELECT r.id FROM accounts r
                             WHERE r.kind = 'reservation' AND r.owner_id = p_task
                            UNION ALL
                            SELECT w.id FROM accounts w
                             WHERE w.kind IN ('worker', 'worker_pending')
                               AND w.owner_id = ANY (p_workers))
             ORDER BY a.id FOR NO KEY UPDATE SKIP LOCKED) x;
    v_res := l_ids[array_position(l_kinds, 'reservation')];
    v_street := l_st[array_position(l_kinds, 'reservation')];

    -- (3) One read: what each input is, the first refusal in input order, what to pay.
    WITH i AS (
        SELECT i.asg, i.w, i.n, p.id AS pid, p.street_id, pol.objection_period,
               gp_lot_expiry(pol, v_now) AS exp,
               (SELECT id FROM accounts WHERE kind = 'worker' AND owner_id = i.w) AS acc,
               (SELECT id FROM accounts WHERE kind = 'worker_pending' AND owner_id = i.w) AS pacc,
               EXISTS (SELECT 1 FROM ledger_txns t
                        WHERE t.kind = 'award' AND t.refs ->> 'assignment_id' = i.asg::text)
                   OR count(*) OVER (PARTITION BY i.asg) > 1 AS paid,
               p.unit_id
          FROM unnest(p_assignments, p_workers) WITH ORDINALITY AS i (asg, w, n)
          LEFT JOIN persons p ON p.id = i.w
          LEFT JOIN ledger_policies pol ON pol.street_unit_id = p.street_id),
    j AS (
        SELECT i.*, coalesce(i.objection_period > interval '0', false) AS pend,
               i.acc = ANY (l_ids) AND i.pacc = ANY (l_ids) AS got
          FROM i),
    bad AS (
        SELECT CASE WHEN j.paid THEN 'paid' WHEN j.pid IS NULL THEN 'person' END AS err, j.asg
          FROM j WHERE j.paid OR j.pid IS NULL ORDER BY j.n LIMIT 1),
    pay AS (
        SELECT j.*, (SELECT coalesce(jsonb_agg(x.id ORDER BY nlevel(x.path)), '[]')
                       FROM org_units u
                       JOIN org_units x
                         ON x.id = ANY (string_to_array(ltree2text(u.path), '.')::bigint[])
                      WHERE u.id = j.unit_id AND x.level IN ('street', 'community', 'grid'))
                    AS rank
          FROM j WHERE j.got AND v_res IS NOT NULL AND j.pid IS NOT NULL AND NOT j.paid)
    SELECT (SELECT err FROM bad), (SELECT asg FROM bad),
           array_agg(pay.asg ORDER BY pay.n), array_agg(pay.w ORDER BY pay.n),
           array_agg(CASE WHEN pay.pend THEN pay.pacc ELSE pay.acc END ORDER BY pay.n),
           array_agg(pay.pend ORDER BY pay.n),
           array_agg(v_now + pay.objection_period ORDER BY pay.n),
           array_agg(pay.exp ORDER BY pay.n), array_agg(pay.street_id ORDER BY pay.n),
           array_agg(pay.rank ORDER BY pay.n), count(pay.asg),
           (SELECT bool_or(b.bal::numeric + d.cnt * p_amount::numeric > 9223372036854775807)
              FROM (SELECT CASE WHEN pay.pend THEN pay.pacc ELSE pay.acc END AS acc,
                           count(*) AS cnt FROM pay GROUP BY 1) d
              JOIN unnest(l_ids, l_bal) b (id, bal) ON b.id = d.acc)
      INTO v_err, v_err_asg, a_asg, a_w, a_dest, a_pend, a_due, a_exp, a_street, a_rank, v_paid,
           v_overflow
      FROM (SELECT 1) one LEFT JOIN pay ON true;
    IF v_err = 'paid' THEN
        PERFORM gp_raise('409', 'already_awarded', 'this assignment has already been paid',
                         'assignment_id');
    ELSIF v_err = 'person' THEN
        PERFORM gp_raise('404', 'person_not_found', 'person not found', 'worker_id');
    END IF;
    IF v_res IS NULL THEN
        IF NOT EXISTS (SELECT 1 FROM accounts WHERE kind = 'reservation' AND owner_id = p_task)
        THEN
            PERFORM gp_raise('402', 'insufficient_reservation', 'the task has no reservation',
                             'task_id');
        END IF;
        RETURN '[]'; -- busy: the next sweep pays
    END IF;
    IF v_paid = 0 THEN -- the reservation or every worker is busy: the next sweep pays
        RETURN '[]';
    END IF;
    v_cover := l_bal[array_position(l_ids, v_res)]::numeric - v_paid::numeric * p_amount;
    IF v_cover < 0 THEN
        PERFORM gp_raise('402', 'insufficient_reservation',
                         'the task reservation cannot cover this amount', 'amount');
    END IF;
    IF v_overflow THEN
        PERFORM gp_raise('400', 'amount_overflow', 'the amount would overflow the balance',
                         'amount');
    END IF;

    -- (4) One write statement. Postings are inserted in (transaction, account) order, so each
    -- account's postings have ascending ids in version order.
    WITH i AS (
        SELECT * FROM unnest(a_asg, a_w, a_dest, a_pend, a_due, a_exp, a_street, a_rank)
                      WITH ORDINALITY AS i (asg, w, dest, pend, due, exp, street, rank, n)),
    t AS (
        INSERT INTO ledger_txns (kind, actor_id, refs, memo, street_id)
        SELECT 'award', p_actor,
               jsonb_build_object('task_id', p_task, 'assignment_id', i.asg, 'worker_id', i.w),
               NULL, v_street
          FROM i ORDER BY i.n
        RETURNING id, (refs ->> 'assignment_id')::bigint AS asg),
    it AS (
        SELECT i.*, t.id AS txn FROM i JOIN t ON t.asg = i.asg),
    legs AS (
        SELECT it.txn, it.dest AS acc, p_amount AS amt FROM it
        UNION ALL
        SELECT it.txn, v_res, -p_amount FROM it),
    b AS (
        SELECT * FROM unnest(l_ids, l_bal, l_ver) AS b (id, bal, ver)),
    p AS (
        INSERT INTO postings (txn_id, account_id, amount, account_version, balance_after,
                              street_id)
        SELECT c.txn, c.acc, c.amt, b.ver + c.k, b.bal + c.run, v_street
          FROM (SELECT legs.*, row_number() OVER w AS k, sum(legs.amt) OVER w AS run
                  FROM legs WINDOW w AS (PARTITION BY legs.acc ORDER BY legs.txn)) c
          JOIN b ON b.id = c.acc
         ORDER BY c.txn, c.acc),
    u AS (
        UPDATE accounts a SET balance = a.balance + s.total, version = a.version + s.cnt
          FROM (SELECT legs.acc, sum(legs.amt) AS total, count(*) AS cnt
                  FROM legs GROUP BY legs.acc) s
         WHERE a.id = s.acc
        RETURNING a.id, a.balance, a.version),
    pp AS (
        INSERT INTO pending_points (award_txn_id, worker_id, amount, earned_at, due_at,
                                    expires_at, street_id)
        SELECT it.txn, it.w, p_amount, v_now, it.due, it.exp, it.street FROM it WHERE it.pend),
    lots AS (
        INSERT INTO point_lots AS l (worker_id, earned_txn_id, amount, remaining, earned_at,
                                     expires_at, street_id)
        SELECT it.w, min(it.txn), sum(p_amount), sum(p_amount), v_now, it.exp, min(it.street)
          FROM it WHERE NOT it.pend AND it.exp IS NOT NULL
         GROUP BY it.w, it.exp
        ON CONFLICT (worker_id, expires_at) DO UPDATE
           SET amount = l.amount + EXCLUDED.amount, remaining = l.remaining + EXCLUDED.remaining),
    e AS (
        INSERT INTO worker_earnings AS e (person_id, period, points, street_id)
        SELECT it.w, per.period, sum(p_amount), min(it.street)
          FROM it CROSS JOIN (VALUES (v_period), ('all')) per (period)
         GROUP BY it.w, per.period
        ON CONFLICT (person_id, period) DO UPDATE SET points = e.points + EXCLUDED.points
        RETURNING e.person_id, e.period, e.points),
    st AS ( -- each worker's state after the batch: the locked pair, as updated
        SELECT b2.owner AS w,
               max(coalesce(u.balance, b2.bal)) FILTER (WHERE b2.kind = 'worker') AS avail,
               max(coalesce(u.balance, b2.bal)) FILTER (WHERE b2.kind = 'worker_pending') AS pend,
               sum(coalesce(u.version, b2.ver)) AS ver
          FROM unnest(l_ids, l_kinds, l_owners, l_bal, l_ver) AS b2 (id, kind, owner, bal, ver)
          LEFT JOIN u ON u.id = b2.id
         WHERE b2.kind IN ('worker', 'worker_pending')
         GROUP BY b2.owner)
    SELECT jsonb_agg(jsonb_build_object(
               'worker_id', it.w, 'available', st.avail, 'balance', st.avail,
               'pending', st.pend, 'version', st.ver,
               'task_id', p_task, 'assignment_id', it.asg,
               'txn_id', it.txn, 'amount', p_amount, 'to_pending', it.pend,
               'earned_month', em.points, 'earned_total', ea.points,
               'period', v_period, 'rank_units', it.rank) ORDER BY it.n)
      INTO v_out
      FROM it
      JOIN st ON st.w = it.w
      JOIN e em ON em.person_id = it.w AND em.period = v_period
      JOIN e ea ON ea.person_id = it.w AND ea.period = 'all';
    IF coalesce(jsonb_array_length(v_out), 0) <> v_paid THEN
        RAISE EXCEPTION 'gp_task_award_many: % replies for % awards', jsonb_array_length(v_out),
                        v_paid;
    END IF;
    RETURN v_out;
END
$$;

-- Returns what remains in the task's reservation (or p_amount of it) to the budget of p_unit
-- (default: the unit the reservation was made against). NULL when nothing remains or the task
-- never reserved.
CREATE FUNCTION gp_task_release(p_task bigint, p_unit bigint, p_actor bigint,
                                p_amount bigint DEFAULT NULL)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    a accounts;
    v_budget bigint;
    v_amt bigint;
BEGIN
    SELECT * INTO a FROM accounts WHERE kind = 'reservation' AND owner_id = p_task;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    v_budget := gp_account_of('budget', coalesce(p_unit, a.unit_id));
    PERFORM gp_accounts_lock(ARRAY[a.id, v_budget]);
    SELECT balance INTO v_amt FROM accounts WHERE id = a.id;
    IF p_amount IS NOT NULL THEN
        IF p_amount <= 0 THEN
            PERFORM gp_raise('400', 'invalid_amount', 'the amount must be positive', 'amount');
        END IF;
        v_amt := p_amount; -- more than remains -> GP402 from the posting
    END IF;
    IF v_amt = 0 THEN
        RETURN NULL;
    END IF;
    RETURN gp_ledger_post_legs('release', p_actor,
        jsonb_build_object('task_id', p_task, 'unit_id', coalesce(p_unit, a.unit_id)), NULL,
        ARRAY[a.id, v_budget], ARRAY[-v_amt, v_amt]);
END
$$;

------------------------------------------------------------------------------------------
-- Durable timers: vesting of pending points and expiry of lots
------------------------------------------------------------------------------------------
-- Run periodically by every server instance's janitor. Takes up to p_batch due pending awards
-- and up to p_batch due lots with FOR UPDATE SKIP LOCKED (instances share the work, each timer
-- fires once), posts one 'vest' (worker_pending -> worker) or 'expire' (worker -> expiry)
-- transaction for each, and returns {"vested": n, "expired": m, "skipped": k,
-- "effects": {"balances": [{worker_id, available, pending, version}, ...]}} for the cache (the
-- effect format of 00_helpers.sql). Due times use the
-- database clock. A row whose worker is busy is skipped this round and picked up by the next.
-- Set-based (issue 12 part 3): a fixed number of statements per call whatever the batch size.
-- Vesting: (1) the due rows, (2) one lock statement for their workers' pairs (ascending id,
-- SKIP LOCKED: a busy worker's rows wait for the next round), (3) one write statement: the
-- 'vest' transactions, their postings with running balances and versions (window sums), one
-- UPDATE per account, the pending rows marked, the lots of the vested points, the outbox rows.
-- Expiry the same way, the expiry account among the locked rows (updated once per batch; busy:
-- the lots wait for the next round). A worker's lots expiring in one batch take, in expiry
-- order, what remains of them but never more than the balance: amount_k = least(C_k, bal) -
-- least(C_(k-1), bal) with C_k the running sum of their remaining points, which is what taking
-- them one after another gave.
CREATE FUNCTION gp_ledger_sweep(p_batch int DEFAULT 100)
RETURNS jsonb LANGUAGE plpgsql SECURITY DEFINER SET search_path = gp, public, pg_temp AS $$
DECLARE
    v_batch int := least(greatest(coalesce(p_batch, 100), 1), 10000);
    v_touched bigint[] := '{}';
    v_vested int := 0;
    v_expired int := 0;
    v_skipped int := 0;
    -- Every transaction is of its worker's street (0024): the worker accounts' street_id
    -- (immutable, so read before the locks) picks the street's own expiry account.
    v_expiry bigint[];
    r_keys bigint[];
    r_workers bigint[];
    l_ids bigint[];
    l_kinds text[];
    l_owners bigint[];
    l_bal bigint[];
    l_ver bigint[];
    l_st bigint[];
    v_n int;
    v_w bigint[];
    v_effects jsonb;
BEGIN
    -- Vesting. (1) The due rows.
    SELECT coalesce(array_agg(x.award_txn_id ORDER BY x.due_at, x.award_txn_id), '{}'),
           coalesce(array_agg(x.worker_id ORDER BY x.due_at, x.award_txn_id), '{}')
      INTO r_keys, r_workers
      FROM (SELECT award_txn_id, worker_id, due_at FROM pending_points
             WHERE vest_txn_id IS NULL AND due_at <= now()
             ORDER BY due_at LIMIT v_batch FOR UPDATE SKIP LOCKED) x;
    IF cardinality(r_keys) > 0 THEN
        -- (2) Their workers' pairs, ascending id, skipping busy ones.
        SELECT array_agg(a.id ORDER BY a.id), array_agg(a.kind ORDER BY a.id),
               array_agg(a.owner_id ORDER BY a.id), array_agg(a.balance ORDER BY a.id),
               array_agg(a.version ORDER BY a.id), array_agg(a.street_id ORDER BY a.id)
          INTO l_ids, l_kinds, l_owners, l_bal, l_ver, l_st
          FROM (SELECT id, kind, owner_id, balance, version, street_id FROM accounts
                 WHERE kind IN ('worker', 'worker_pending') AND owner_id = ANY (r_workers)
                 ORDER BY id FOR NO KEY UPDATE SKIP LOCKED) a;
        -- (3) One write.
        WITH b AS (
            SELECT * FROM unnest(l_ids, l_kinds, l_owners, l_bal, l_ver, l_st)
                          AS b (id, kind, owner, bal, ver, st)),
        v AS ( -- the rows whose worker has both accounts locked, in due order
            SELECT pp.*, k.n, wa.id AS acc, pa.id AS pacc, wa.st
              FROM unnest(r_keys) WITH ORDINALITY AS k (award, n)
              JOIN pending_points pp ON pp.award_txn_id = k.award
              JOIN b wa ON wa.owner = pp.worker_id AND wa.kind = 'worker'
              JOIN b pa ON pa.owner = pp.worker_id AND pa.kind = 'worker_pending'),
        t AS (
            INSERT INTO ledger_txns (kind, actor_id, refs, memo, street_id)
            SELECT 'vest', NULL,
                   jsonb_build_object('award_txn_id', v.award_txn_id, 'worker_id', v.worker_id),
                   NULL, v.st
              FROM v ORDER BY v.n
            RETURNING id, (refs ->> 'award_txn_id')::bigint AS award),
        vt AS (
            SELECT v.*, t.id AS txn FROM v JOIN t ON t.award = v.award_txn_id),
        legs AS (
            SELECT vt.txn, vt.pacc AS acc, -vt.amount AS amt, vt.st FROM vt
            UNION ALL
            SELECT vt.txn, vt.acc, vt.amount, vt.st FROM vt),
        p AS (
            INSERT INTO postings (txn_id, account_id, amount, account_version, balance_after,
                                  street_id)
            SELECT c.txn, c.acc, c.amt, b.ver + c.k, b.bal + c.run, c.st
              FROM (SELECT legs.*, row_number() OVER w AS k, sum(legs.amt) OVER w AS run
                      FROM legs WINDOW w AS (PARTITION BY legs.acc ORDER BY legs.txn)) c
              JOIN b ON b.id = c.acc
             ORDER BY c.txn, c.acc),
        u AS (
            UPDATE accounts a SET balance = a.balance + s.total, version = a.version + s.cnt
              FROM (SELECT legs.acc, sum(legs.amt) AS total, count(*) AS cnt
                      FROM legs GROUP BY legs.acc) s
             WHERE a.id = s.acc),
        m AS (
            UPDATE pending_points x SET vest_txn_id = vt.txn, vested_at = now()
              FROM vt WHERE x.award_txn_id = vt.award_txn_id),
        lots AS (
            INSERT INTO point_lots AS l (worker_id, earned_txn_id, amount, remaining, earned_at,
                                         expires_at, street_id)
            SELECT vt.worker_id, min(vt.txn), sum(vt.amount), sum(vt.amount), min(vt.earned_at),
                   vt.expires_at, min(vt.street_id)
              FROM vt WHERE vt.expires_at IS NOT NULL
             GROUP BY vt.worker_id, vt.expires_at
            ON CONFLICT (worker_id, expires_at) DO UPDATE
               SET amount = l.amount + EXCLUDED.amount,
                   remaining = l.remaining + EXCLUDED.remaining),
        ob AS (
            INSERT INTO outbox (topic, person_id, payload, street_id)
            SELECT 'points.vested', vt.worker_id,
                   jsonb_build_object('txn_id', vt.txn, 'award_txn_id', vt.award_txn_id,
                                      'amount', vt.amount), vt.st
              FROM vt ORDER BY vt.txn)
        SELECT count(*), coalesce(array_agg(vt.worker_id), '{}') INTO v_n, v_w FROM vt;
        v_vested := v_n;
        v_skipped := cardinality(r_keys) - v_n;
        v_touched := v_touched || v_w;
    END IF;

    -- Expiry. (1) The due lots.
    SELECT coalesce(array_agg(x.id ORDER BY x.expires_at, x.id), '{}'),
           coalesce(array_agg(x.worker_id ORDER BY x.expires_at, x.id), '{}')
      INTO r_keys, r_workers
      FROM (SELECT id, worker_id, expires_at FROM point_lots
             WHERE remaining > 0 AND expires_at <= now()
             ORDER BY expires_at LIMIT v_batch FOR UPDATE SKIP LOCKED) x;
    IF cardinality(r_keys) > 0 THEN
        -- The expiry accounts of the workers' streets (made on demand; street 0: the legacy
        -- one), so that every expiry stays in its worker's street.
        SELECT coalesce(array_agg(gp_account_of('expiry', s.street_id)), '{}') INTO v_expiry
          FROM (SELECT DISTINCT street_id FROM accounts
                 WHERE kind = 'worker' AND owner_id = ANY (r_workers)) s;
        -- (2) The workers' pairs and those expiry accounts, ascending id, skipping busy ones
        -- (rows this transaction already holds are not skipped). A lot whose worker or
        -- street's expiry account is busy waits for the next round.
        SELECT array_agg(a.id ORDER BY a.id), array_agg(a.kind ORDER BY a.id),
               array_agg(a.owner_id ORDER BY a.id), array_agg(a.balance ORDER BY a.id),
               array_agg(a.version ORDER BY a.id), array_agg(a.street_id ORDER BY a.id)
          INTO l_ids, l_kinds, l_owners, l_bal, l_ver, l_st
          FROM (SELECT id, kind, owner_id, balance, version, street_id FROM accounts
                 WHERE id IN (SELECT w.id FROM accounts w
                               WHERE w.kind IN ('worker', 'worker_pending')
                                 AND w.owner_id = ANY (r_workers)
                              UNION ALL
                              SELECT unnest(v_expiry))
                 ORDER BY id FOR NO KEY UPDATE SKIP LOCKED) a;
        WITH b AS (
            SELECT * FROM unnest(l_ids, l_kinds, l_owners, l_bal, l_ver, l_st)
                          AS b (id, kind, owner, bal, ver, st)),
        e0 AS ( -- the lots whose worker and expiry account are locked, in expiry order
            SELECT l.id, l.worker_id, l.expires_at, l.remaining, wa.st, k.n,
                   wa.id AS acc, x.id AS xacc, greatest(wa.bal, 0) AS bal,
                   sum(l.remaining) OVER (PARTITION BY l.worker_id ORDER BY k.n) AS cum
              FROM unnest(r_keys) WITH ORDINALITY AS k (lot, n)
              JOIN point_lots l ON l.id = k.lot
              JOIN b wa ON wa.owner = l.worker_id AND wa.kind = 'worker'
              JOIN b pa ON pa.owner = l.worker_id AND pa.kind = 'worker_pending'
              JOIN b x ON x.kind = 'expiry' AND x.st = wa.st),
        e AS (
            SELECT e0.*, (least(e0.cum, e0.bal) - least(e0.cum - e0.remaining, e0.bal))::bigint
                         AS amt
              FROM e0),
        t AS (
            INSERT INTO ledger_txns (kind, actor_id, refs, memo, street_id)
            SELECT 'expire', NULL,
                   jsonb_build_object('lot_id', e.id, 'worker_id', e.worker_id,
                                      'expires_at', e.expires_at,
                                      'shortfall', e.remaining - e.amt),
                   NULL, e.st
              FROM e WHERE e.amt > 0 ORDER BY e.n
            RETURNING id, (refs ->> 'lot_id')::bigint AS lot),
        et AS (
            SELECT e.*, t.id AS txn FROM e LEFT JOIN t ON t.lot = e.id),
        legs AS (
            SELECT et.txn, et.acc, -et.amt AS amt, et.st FROM et WHERE et.txn IS NOT NULL
            UNION ALL
            SELECT et.txn, et.xacc, et.amt, et.st FROM et WHERE et.txn IS NOT NULL),
        p AS (
            INSERT INTO postings (txn_id, account_id, amount, account_version, balance_after,
                                  street_id)
            SELECT c.txn, c.acc, c.amt, b.ver + c.k, b.bal + c.run, c.st
              FROM (SELECT legs.*, row_number() OVER w AS k, sum(legs.amt) OVER w AS run
                      FROM legs WINDOW w AS (PARTITION BY legs.acc ORDER BY legs.txn)) c
              JOIN b ON b.id = c.acc
             ORDER BY c.txn, c.acc),
        u AS (
            UPDATE accounts a SET balance = a.balance + s.total, version = a.version + s.cnt
              FROM (SELECT legs.acc, sum(legs.amt) AS total, count(*) AS cnt
                      FROM legs GROUP BY legs.acc) s
             WHERE a.id = s.acc),
        m AS (
            UPDATE point_lots x SET remaining = 0, expire_txn_id = et.txn
              FROM et WHERE x.id = et.id),
        ob AS (
            INSERT INTO outbox (topic, person_id, payload, street_id)
            SELECT 'points.expired', et.worker_id,
                   jsonb_build_object('txn_id', et.txn, 'amount', et.amt,
                                      'expires_at', et.expires_at), et.st
              FROM et WHERE et.txn IS NOT NULL ORDER BY et.txn)
        SELECT count(*), coalesce(array_agg(et.worker_id) FILTER (WHERE et.txn IS NOT NULL),
                                  '{}')
          INTO v_n, v_w FROM et;
        v_expired := v_n;
        v_skipped := v_skipped + cardinality(r_keys) - v_n;
        v_touched := v_touched || v_w;
    END IF;

    -- The touched workers' states for the cache (gp_worker_state's shape), in one read.
    IF cardinality(v_touched) = 0 THEN
        v_effects := jsonb_build_object('balances', '[]'::jsonb);
    ELSE
        SELECT jsonb_build_object('balances', coalesce(jsonb_agg(s.j ORDER BY s.w), '[]'))
          INTO v_effects
          FROM (SELECT a.owner_id AS w, jsonb_build_object('worker_id', a.owner_id,
                       'available', coalesce(sum(a.balance) FILTER (WHERE a.kind = 'worker'), 0),
                       'balance', coalesce(sum(a.balance) FILTER (WHERE a.kind = 'worker'), 0),
                       'pending',
                       coalesce(sum(a.balance) FILTER (WHERE a.kind = 'worker_pending'), 0),
                       'version', coalesce(sum(a.version), 0)) AS j
                  FROM accounts a
                 WHERE a.kind IN ('worker', 'worker_pending') AND a.owner_id = ANY (v_touched)
                 GROUP BY a.owner_id) s;
    END IF;
    RETURN jsonb_build_object('vested', v_vested, 'expired', v_expired, 'skipped', v_skipped,
                              'effects', v_effects);
END
$$;

------------------------------------------------------------------------------------------
-- Budgets: issue, grant, adjust (business operations: scope, audit, idempotency, receipt)
------------------------------------------------------------------------------------------
CREATE FUNCTION gp_ledger_check_amount(p_amount bigint) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF p_amount IS NULL OR p_amount <= 0 THEN
        PERFORM gp_raise('400', 'invalid_amount', 'the amount must be a positive integer',
                         'amount');
    END IF;
END
$$;

CREATE FUNCTION gp_ledger_check_memo(p_memo text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF length(p_memo) > 500 THEN
        PERFORM gp_raise('400', 'memo_too_long', 'the memo is longer than 500 characters', 'memo');
    END IF;
END
$$;

CREATE FUNCTION gp_txn_created_at(p_txn bigint) RETURNS timestamptz LANGUAGE sql STABLE AS $$
    SELECT created_at FROM ledger_txns WHERE id = p_txn
$$;

-- A street admin issues points from the issuance account into the street's budget.
-- Receipt: {"txn_id", "kind": "issue", "unit_id", "amount", "budget": {"balance", "version"},
-- "created_at"}.
CREATE FUNCTION gp_issue(p_actor bigint, p_unit bigint, p_amount bigint, p_memo text,
                         p_idem_principal text DEFAULT NULL, p_idem_key text DEFAULT NULL,
                         p_request_hash text DEFAULT NULL)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_principal text := gp_idem_principal(p_idem_principal, p_actor);
    v_replay jsonb;
    u org_units;
    v_budget bigint;
    v_txn bigint;
    v_receipt jsonb;
BEGIN
    v_replay := gp_idem_begin(v_principal, p_idem_key, p_request_hash);
    IF v_replay IS NOT NULL THEN
        RETURN v_replay;
    END IF;
    u := gp_require_unit(p_actor, p_unit, gp_reader_roles());
    IF u.level <> 'street' THEN
        PERFORM gp_raise('400', 'not_a_street', 'points are issued to a street''s budget',
                         'unit_id');
    END IF;
    IF gp_admin_rank(p_actor, p_unit) < 3 THEN
        PERFORM gp_raise('403', 'forbidden', 'only a street admin can issue points', 'unit_id');
    END IF;
    PERFORM gp_ledger_check_amount(p_amount);
    PERFORM gp_ledger_check_memo(p_memo);
    v_budget := gp_account_of('budget', p_unit);
    v_txn := gp_ledger_post_legs('issue', p_actor, jsonb_build_object('unit_id', p_unit), p_memo,
        ARRAY[gp_account_of('issuance', p_unit), v_budget], ARRAY[-p_amount, p_amount],
        v_principal, p_idem_key);
    SELECT jsonb_build_object('txn_id', v_txn, 'kind', 'issue', 'unit_id', p_unit,
                              'amount', p_amount, 'memo', p_memo,
                              'budget', jsonb_build_object('balance', a.balance,
                                                           'version', a.version),
                              'created_at', gp_txn_created_at(v_txn))
      INTO v_receipt FROM accounts a WHERE a.id = v_budget;
    PERFORM gp_audit(p_actor, 'ledger.issue', 'ledger_txn', v_txn::text, p_unit, NULL, v_receipt,
                     p_memo);
    RETURN gp_idem_finish(v_principal, p_idem_key, p_request_hash, v_receipt);
END
$$;

-- Moves budget down the tree: a street admin from the street to a community (or below), a
-- community admin from a community to a grid, grid staff from a grid to a micro-grid. Both
-- units must be visible to the actor (else 404), the target strictly inside the source's
-- subtree (else 400), and the actor an admin of the source's level (else 403). Receipt:
-- {"txn_id", "kind": "grant", "from_unit_id", "to_unit_id", "amount", "from": {"balance",
-- "version"}, "to": {...}, "created_at"}.
CREATE FUNCTION gp_grant(p_actor bigint, p_from_unit bigint, p_to_unit bigint, p_amount bigint,
                         p_memo text, p_idem_principal text DEFAULT NULL,
                         p_idem_key text DEFAULT NULL, p_request_hash text DEFAULT NULL)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_principal text := gp_idem_principal(p_idem_principal, p_actor);
    v_replay jsonb;
    f org_units;
    t org_units;
    v_from bigint;
    v_to bigint;
    v_txn bigint;
    v_receipt jsonb;
BEGIN
    v_replay := gp_idem_begin(v_principal, p_idem_key, p_request_hash);
    IF v_replay IS NOT NULL THEN
        RETURN v_replay;
    END IF;
    f := gp_require_unit(p_actor, p_from_unit, gp_reader_roles(), 'from_unit_id');
    t := gp_require_unit(p_actor, p_to_unit, gp_reader_roles(), 'to_unit_id');
    IF NOT (t.path <@ f.path) OR t.id = f.id THEN
        PERFORM gp_raise('400', 'invalid_grant_target',
                         'budget can only be granted to a unit inside the source unit',
                         'to_unit_id');
    END IF;
    IF gp_admin_rank(p_actor, f.id) < (CASE f.level WHEN 'street' THEN 3
                                                    WHEN 'community' THEN 2 ELSE 1 END) THEN
        PERFORM gp_raise('403', 'forbidden', 'your role cannot grant this unit''s budget',
                         'from_unit_id');
    END IF;
    PERFORM gp_ledger_check_amount(p_amount);
    PERFORM gp_ledger_check_memo(p_memo);
    v_from := gp_account_of('budget', f.id);
    v_to := gp_account_of('budget', t.id);
    v_txn := gp_ledger_post_legs('grant', p_actor,
        jsonb_build_object('from_unit_id', f.id, 'to_unit_id', t.id), p_memo,
        ARRAY[v_from, v_to], ARRAY[-p_amount, p_amount], v_principal, p_idem_key);
    SELECT jsonb_build_object('txn_id', v_txn, 'kind', 'grant', 'from_unit_id', f.id,
            'to_unit_id', t.id, 'amount', p_amount, 'memo', p_memo,
            'from', (SELECT jsonb_build_object('balance', balance, 'version', version)
                       FROM accounts WHERE id = v_from),
            'to', (SELECT jsonb_build_object('balance', balance, 'version', version)
                     FROM accounts WHERE id = v_to),
            'created_at', gp_txn_created_at(v_txn))
      INTO v_receipt;
    PERFORM gp_audit(p_actor, 'ledger.grant', 'ledger_txn', v_txn::text, f.id, NULL, v_receipt,
                     p_memo);
    RETURN gp_idem_finish(v_principal, p_idem_key, p_request_hash, v_receipt);
END
$$;

-- A street admin corrects a worker's available balance by p_amount (signed, non-zero) with a
-- mandatory reason; the counterpart is the budget of the worker's street (a positive adjust
-- takes from it, GP402 insufficient_budget when it cannot; a negative one returns to it, GP402
-- insufficient_points when the worker does not have it). Audited with the reason. Receipt:
-- {"txn_id", "kind": "adjust", "worker_id", "amount", "reason", "category", "available", "pending",
-- "version", "balance", "created_at"}; effects: the worker's balance (none on a replay).
CREATE FUNCTION gp_adjust(p_actor bigint, p_worker bigint, p_amount bigint, p_reason text,
                          p_idem_principal text DEFAULT NULL, p_idem_key text DEFAULT NULL,
                          p_request_hash text DEFAULT NULL, p_category text DEFAULT 'other')
RETURNS gp_reply LANGUAGE plpgsql AS $$
DECLARE
    v_principal text := gp_idem_principal(p_idem_principal, p_actor);
    v_replay jsonb;
    w persons;
    v_street bigint;
    v_before jsonb;
    v_txn bigint;
    v_receipt jsonb;
BEGIN
    v_replay := gp_idem_begin(v_principal, p_idem_key, p_request_hash);
    IF v_replay IS NOT NULL THEN
        RETURN gp_out(v_replay);
    END IF;
    w := gp_require_person(p_actor, p_worker, gp_reader_roles());
    IF gp_admin_rank(p_actor, w.unit_id) < 3 THEN
        PERFORM gp_raise('403', 'forbidden', 'only a street admin can adjust points', 'worker_id');
    END IF;
    IF p_actor = p_worker THEN
        PERFORM gp_raise('403', 'forbidden', 'you cannot adjust your own points', 'worker_id');
    END IF;
    IF p_reason IS NULL OR length(btrim(p_reason)) = 0 THEN
        PERFORM gp_raise('400', 'reason_required', 'an adjustment needs a reason', 'reason');
    END IF;
    IF length(p_reason) > 500 THEN
        PERFORM gp_raise('400', 'reason_too_long', 'the reason is longer than 500 characters',
                         'reason');
    END IF;
    IF p_amount IS NULL OR p_amount = 0 OR p_amount = -9223372036854775808 THEN
        PERFORM gp_raise('400', 'invalid_amount', 'the amount must be a non-zero integer',
                         'amount');
    END IF;
    v_street := gp_street_of_unit(w.unit_id);
    PERFORM gp_account_of('worker', p_worker);
    v_before := gp_worker_state(p_worker);
    v_txn := gp_ledger_post_legs('adjust', p_actor,
        jsonb_build_object('worker_id', p_worker, 'unit_id', v_street,
                           'category', coalesce(p_category, 'other')), btrim(p_reason),
        ARRAY[gp_account_of('budget', v_street), gp_account_of('worker', p_worker)],
        ARRAY[-p_amount, p_amount], v_principal, p_idem_key);
    IF p_amount < 0 THEN
        PERFORM gp_worker_spend_lots(p_worker, -p_amount);
    ELSE
        PERFORM gp_worker_add_lot(p_worker, v_txn, p_amount);
    END IF;
    v_receipt := gp_worker_state(p_worker) || jsonb_build_object('txn_id', v_txn,
        'kind', 'adjust', 'amount', p_amount, 'reason', btrim(p_reason),
        'category', coalesce(p_category, 'other'), 'created_at', gp_txn_created_at(v_txn));
    PERFORM gp_audit(p_actor, 'ledger.adjust', 'person', p_worker::text, w.unit_id, v_before,
                     v_receipt, btrim(p_reason));
    PERFORM gp_outbox('points.adjusted', p_worker,
        jsonb_build_object('txn_id', v_txn, 'amount', p_amount, 'reason', btrim(p_reason)));
    RETURN gp_out(gp_idem_finish(v_principal, p_idem_key, p_request_hash, v_receipt),
                  gp_fx_balances(ARRAY[p_worker]));
END
$$;

------------------------------------------------------------------------------------------
-- Policy
------------------------------------------------------------------------------------------
-- Parses an interval given as seconds (number) or text ("3 days"); NULL when absent.
CREATE FUNCTION gp_parse_interval(p_value jsonb, p_field text) RETURNS interval
LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF p_value IS NULL OR jsonb_typeof(p_value) = 'null' THEN
        RETURN NULL;
    ELSIF jsonb_typeof(p_value) = 'number' THEN
        RETURN make_interval(secs => (p_value #>> '{}')::double precision);
    ELSIF jsonb_typeof(p_value) = 'string' THEN
        RETURN (p_value #>> '{}')::interval;
    END IF;
    PERFORM gp_raise('400', 'invalid_interval', 'expected seconds or an interval', p_field);
    RETURN NULL;
EXCEPTION
    WHEN invalid_datetime_format OR datetime_field_overflow OR invalid_parameter_value
         OR numeric_value_out_of_range OR interval_field_overflow THEN
        PERFORM gp_raise('400', 'invalid_interval', 'expected seconds or an interval', p_field);
        RETURN NULL;
END
$$;

-- A street admin sets the street's points policy. p_args: any of
--   {"objection_period": seconds | "3 days",      -- 0 = points are spendable at once
--    "expiry": "none" | "end_of_next_year" | seconds | "365 days"}.
-- Applies to points earned from now on. Audited. Returns the policy (gp_policy_get shape).
CREATE FUNCTION gp_policy_set(p_actor bigint, p_street bigint, p_args jsonb)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    u org_units;
    before ledger_policies;
    p ledger_policies;
    v_obj interval;
    v_exp text;
    v_after interval;
BEGIN
    u := gp_require_unit(p_actor, p_street, gp_reader_roles(), 'street_id');
    IF u.level <> 'street' THEN
        PERFORM gp_raise('400', 'not_a_street', 'policies are set per street', 'street_id');
    END IF;
    IF gp_admin_rank(p_actor, p_street) < 3 THEN
        PERFORM gp_raise('403', 'forbidden', 'only a street admin can set the points policy',
                         'street_id');
    END IF;
    IF p_args IS NULL OR jsonb_typeof(p_args) <> 'object' THEN
        PERFORM gp_raise('400', 'invalid_request', 'expected an object', 'policy');
    END IF;
    SELECT * INTO before FROM ledger_policies WHERE street_unit_id = p_street;
    v_obj := coalesce(before.objection_period, '0');
    v_exp := coalesce(before.expiry, 'none');
    v_after := before.expiry_after;
    IF p_args ? 'objection_period' THEN
        v_obj := coalesce(gp_parse_interval(p_args -> 'objection_period', 'objection_period'),
                          '0');
        IF v_obj < '0' OR v_obj > '90 days' THEN
            PERFORM gp_raise('400', 'invalid_interval',
                             'the objection period must be between 0 and 90 days',
                             'objection_period');
        END IF;
    END IF;
    IF p_args ? 'expiry' THEN
        IF p_args ->> 'expiry' IN ('none', 'end_of_next_year') THEN
            v_exp := p_args ->> 'expiry';
            v_after := NULL;
        ELSE
            v_after := gp_parse_interval(p_args -> 'expiry', 'expiry');
            IF v_after IS NULL OR v_after <= '0' THEN
                PERFORM gp_raise('400', 'invalid_interval',
                    'expiry is none, end_of_next_year or a positive interval', 'expiry');
            END IF;
            v_exp := 'interval';
        END IF;
    END IF;
    INSERT INTO ledger_policies AS x (street_unit_id, objection_period, expiry, expiry_after,
                                      updated_by, updated_at)
    VALUES (p_street, v_obj, v_exp, v_after, p_actor, now())
    ON CONFLICT (street_unit_id) DO UPDATE
       SET objection_period = EXCLUDED.objection_period, expiry = EXCLUDED.expiry,
           expiry_after = EXCLUDED.expiry_after, updated_by = EXCLUDED.updated_by,
           updated_at = EXCLUDED.updated_at
    RETURNING * INTO p;
    PERFORM gp_audit(p_actor, 'ledger.policy_set', 'unit', p_street::text, p_street,
                     CASE WHEN before.street_unit_id IS NULL THEN NULL
                          ELSE gp_policy_json(p_street, before) END,
                     gp_policy_json(p_street, p));
    RETURN gp_policy_json(p_street, p);
END
$$;

CREATE FUNCTION gp_policy_get(p_actor bigint, p_street bigint) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    u org_units;
    p ledger_policies;
BEGIN
    u := gp_require_unit(p_actor, p_street, gp_reader_roles(), 'street_id');
    IF u.level <> 'street' THEN
        PERFORM gp_raise('400', 'not_a_street', 'policies are set per street', 'street_id');
    END IF;
    SELECT * INTO p FROM ledger_policies WHERE street_unit_id = p_street;
    RETURN gp_policy_json(p_street, p);
END
$$;

------------------------------------------------------------------------------------------
-- Reads
------------------------------------------------------------------------------------------
-- A worker reads their own ledger; staff and auditors over the worker's home unit read it
-- too; anyone else gets 404 (no existence oracle).
CREATE FUNCTION gp_require_ledger_reader(p_actor bigint, p_worker bigint) RETURNS persons
LANGUAGE plpgsql STABLE AS $$
DECLARE
    p persons;
BEGIN
    IF p_actor IS NOT NULL AND p_actor = p_worker THEN
        SELECT * INTO p FROM persons WHERE id = p_worker;
        IF FOUND THEN
            RETURN p;
        END IF;
    END IF;
    RETURN gp_require_person(p_actor, p_worker, gp_reader_roles());
END
$$;

-- {"worker_id", "available", "balance" (= available), "pending", "expiring_soon" (points of
-- the available balance that expire within 30 days), "next_expiry", "version"}: one snapshot,
-- so (available, pending, version) is what ledger_cache_put wants on a cache miss; effects:
-- that state for the cache (a read that refills it).
-- Every read names the worker's street (persons.street_id, from the scope check's row), so
-- that each routes to one shard under Citus (docs/SCALING.md).
CREATE FUNCTION gp_balance(p_actor bigint, p_worker bigint) RETURNS gp_reply
LANGUAGE plpgsql STABLE AS $$
DECLARE
    w persons;
    st jsonb;
BEGIN
    w := gp_require_ledger_reader(p_actor, p_worker);
    st := gp_worker_state(p_worker, w.street_id);
    RETURN gp_out(st || (
        SELECT jsonb_build_object(
            'expiring_soon', least(coalesce(sum(remaining) FILTER (
                                        WHERE expires_at <= now() + interval '30 days'), 0),
                                   (st ->> 'available')::bigint),
            'next_expiry', min(expires_at))
          FROM point_lots WHERE worker_id = p_worker AND street_id = w.street_id
                            AND remaining > 0),
        jsonb_build_object('balances', jsonb_build_array(st)));
END
$$;

-- The postings of the accounts p_accounts, newest first, keyset-paginated on the posting id;
-- each with the log position of its transaction ("log_index", NULL until the sealer has
-- sealed it). The accounts are of one street, p_street (a caller that does not know it leaves
-- it NULL: it is read from the first account); both the accounts and the postings are read
-- with street_id = that street, so the query names its shard (docs/SCALING.md). Postings
-- carry their transaction's street, which is the street of every non-legacy account in it.
CREATE FUNCTION gp_postings_page(p_accounts bigint[], p_kind text, p_from timestamptz,
                                 p_to timestamptz, p_after bigint, p_limit int,
                                 p_street bigint DEFAULT NULL)
RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_limit int := least(greatest(coalesce(p_limit, 50), 1), 200);
    v_street bigint := p_street;
    items jsonb;
BEGIN
    IF p_kind IS NOT NULL AND NOT (p_kind = ANY (gp_ledger_kinds())) THEN
        PERFORM gp_raise('400', 'invalid_kind', 'unknown transaction kind', 'kind');
    END IF;
    IF v_street IS NULL THEN
        SELECT street_id INTO v_street FROM accounts WHERE id = p_accounts[1];
    END IF;
    SELECT coalesce(jsonb_agg(jsonb_build_object(
               'id', x.id, 'txn_id', x.txn_id, 'kind', x.kind,
               'account', CASE x.account_kind WHEN 'worker' THEN 'available'
                                              WHEN 'worker_pending' THEN 'pending'
                                              ELSE x.account_kind END,
               'amount', x.amount, 'balance_after', x.balance_after, 'refs', x.refs,
               'memo', x.memo, 'created_at', x.created_at,
               'log_index', (SELECT l.idx FROM audit_leaves l WHERE l.txn_id = x.txn_id))
               ORDER BY x.id DESC), '[]')
      INTO items
      FROM (SELECT y.* FROM accounts a
              CROSS JOIN LATERAL (
                  SELECT p.id, p.txn_id, t.kind, a.kind AS account_kind, p.amount,
                         p.balance_after, t.refs, t.memo, t.created_at
                    FROM postings p JOIN ledger_txns t ON t.id = p.txn_id
                   WHERE p.account_id = a.id AND p.street_id = v_street
                     AND t.street_id = v_street
                     AND (p_after IS NULL OR p.id < p_after)
                     AND (p_kind IS NULL OR t.kind = p_kind)
                     AND (p_from IS NULL OR t.created_at >= p_from)
                     AND (p_to IS NULL OR t.created_at < p_to)
                   ORDER BY p.id DESC LIMIT v_limit + 1) y
             WHERE a.id = ANY (p_accounts) AND a.street_id = v_street
             ORDER BY y.id DESC LIMIT v_limit + 1) x;
    RETURN gp_page(items, v_limit);
END
$$;

-- A worker's statement: the postings of their available and pending accounts, newest first,
-- optionally only of one transaction kind and within [p_from, p_to); pass the returned
-- next_cursor as p_after for the next page. Items: {"id" (posting), "txn_id", "kind",
-- "account": "available"|"pending", "amount", "balance_after", "refs", "memo", "created_at"}.
CREATE FUNCTION gp_statement(p_actor bigint, p_worker bigint, p_kind text, p_from timestamptz,
                             p_to timestamptz, p_after bigint, p_limit int)
RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
DECLARE
    w persons;
BEGIN
    w := gp_require_ledger_reader(p_actor, p_worker);
    RETURN gp_postings_page(
        ARRAY(SELECT id FROM accounts WHERE kind IN ('worker', 'worker_pending')
                                        AND owner_id = p_worker AND street_id = w.street_id),
        p_kind, p_from, p_to, p_after, p_limit, w.street_id)
        || jsonb_build_object('worker_id', p_worker);
END
$$;

-- Every worker's points in a unit's subtree for a period, highest first: the board the Redis
-- ranking is built from. Internal (no actor): for the server's cache and the CLI.
CREATE FUNCTION gp_rank_board(p_unit bigint, p_period text) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('unit_id', p_unit, 'period', p_period,
        'items', coalesce(jsonb_agg(jsonb_build_array(e.person_id, e.points)
                                    ORDER BY e.points DESC, e.person_id), '[]'))
      FROM org_units s
      JOIN org_units u ON u.path <@ s.path
      JOIN persons p ON p.unit_id = u.id
      JOIN worker_earnings e ON e.person_id = p.id AND e.period = p_period
     WHERE s.id = p_unit AND e.points > 0
$$;

-- Which board a rank request reads: checks the reader, the scope and the period and returns
-- the worker's ancestor unit of that level. The server then reads rank:{unit}:<period> in
-- Redis (ledger_rank_get) and calls gp_rank only when the board is missing or Redis is down.
CREATE FUNCTION gp_rank_unit(p_actor bigint, p_worker bigint, p_scope_level text, p_period text)
RETURNS org_units LANGUAGE plpgsql STABLE AS $$
DECLARE
    w persons;
    s org_units;
BEGIN
    w := gp_require_ledger_reader(p_actor, p_worker);
    IF p_scope_level IS NULL OR p_scope_level NOT IN ('grid', 'community', 'street') THEN
        PERFORM gp_raise('400', 'invalid_scope', 'scope is grid, community or street', 'scope');
    END IF;
    IF p_period IS NULL OR NOT (p_period = 'all' OR p_period ~ '^[0-9]{4}-(0[1-9]|1[0-2])$') THEN
        PERFORM gp_raise('400', 'invalid_period', 'period is YYYY-MM or all', 'period');
    END IF;
    SELECT a.* INTO s FROM org_units u
      JOIN org_units a ON a.id = ANY (string_to_array(ltree2text(u.path), '.')::bigint[])
     WHERE u.id = w.unit_id AND a.level = p_scope_level;
    IF NOT FOUND THEN
        PERFORM gp_raise('404', 'unit_not_found', 'the worker belongs to no unit of this level',
                         'scope');
    END IF;
    RETURN s;
END
$$;

CREATE FUNCTION gp_rank_target(p_actor bigint, p_worker bigint, p_scope_level text,
                               p_period text)
RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
DECLARE
    s org_units := gp_rank_unit(p_actor, p_worker, p_scope_level, p_period);
BEGIN
    RETURN jsonb_build_object('worker_id', p_worker, 'unit_id', s.id, 'level', s.level,
                              'period', p_period);
END
$$;

-- A worker's rank among the workers of their grid, community or street for a month
-- ('YYYY-MM', Asia/Shanghai) or 'all', from PostgreSQL (the fallback of the Redis boards):
-- {"worker_id", "unit_id", "level", "period", "points", "rank" (1 + workers with more points;
-- null when the worker earned nothing in the period), "total" (workers with points),
-- "source": "ledger"}.
CREATE FUNCTION gp_rank(p_actor bigint, p_worker bigint, p_scope_level text, p_period text)
RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
DECLARE
    s org_units := gp_rank_unit(p_actor, p_worker, p_scope_level, p_period);
    v_points bigint;
    v_rank bigint;
    v_total bigint;
BEGIN
    v_points := coalesce((SELECT points FROM worker_earnings
                           WHERE person_id = p_worker AND period = p_period), 0);
    SELECT 1 + count(*) FILTER (WHERE e.points > v_points), count(*)
      INTO v_rank, v_total
      FROM org_units u
      JOIN persons p ON p.unit_id = u.id
      JOIN worker_earnings e ON e.person_id = p.id AND e.period = p_period
     WHERE u.path <@ s.path AND e.points > 0;
    RETURN jsonb_build_object('worker_id', p_worker, 'unit_id', s.id, 'level', s.level,
                              'period', p_period, 'points', v_points,
                              'rank', CASE WHEN v_points > 0 THEN v_rank END,
                              'total', v_total, 'source', 'ledger');
END
$$;

-- Budgets of the subtree of p_unit for staff and auditors: per unit its budget balance and
-- what is reserved in open tasks (reservation accounts with a balance), plus subtree totals.
-- Keyset-paginated on unit id. {"unit_id", "totals": {"budget", "reserved"}, "items":
-- [{"id", "unit_id", "level", "name", "budget", "version", "reserved", "open_tasks"}],
-- "next_cursor"}.
CREATE FUNCTION gp_budgets(p_actor bigint, p_unit bigint, p_after bigint DEFAULT NULL,
                           p_limit int DEFAULT 200)
RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
DECLARE
    u org_units;
    v_limit int := least(greatest(coalesce(p_limit, 200), 1), 1000);
    items jsonb;
    totals jsonb;
BEGIN
    u := gp_require_unit(p_actor, p_unit, gp_reader_roles());
    SELECT coalesce(jsonb_agg(jsonb_build_object('id', x.id, 'unit_id', x.id,
               'level', x.level, 'name', x.name, 'budget', x.budget, 'version', x.version,
               'reserved', x.reserved, 'open_tasks', x.open_tasks) ORDER BY x.id), '[]')
      INTO items
      FROM (SELECT s.id, s.level, s.name,
                   coalesce(b.balance, 0) AS budget, coalesce(b.version, 0) AS version,
                   coalesce(r.reserved, 0) AS reserved, coalesce(r.n, 0) AS open_tasks
              FROM org_units s
              LEFT JOIN accounts b ON b.kind = 'budget' AND b.owner_id = s.id
              LEFT JOIN LATERAL (SELECT sum(balance) AS reserved, count(*) AS n
                                   FROM accounts
                                  WHERE unit_id = s.id AND kind = 'reservation'
                                    AND balance > 0) r ON true
             WHERE s.path <@ u.path AND s.id > coalesce(p_after, 0)
             ORDER BY s.id LIMIT v_limit + 1) x;
    SELECT jsonb_build_object(
               'budget', coalesce(sum(a.balance) FILTER (WHERE a.kind = 'budget'), 0),
               'reserved', coalesce(sum(a.balance) FILTER (WHERE a.kind = 'reservation'), 0))
      INTO totals
      FROM org_units s JOIN accounts a ON a.unit_id = s.id AND a.kind IN ('budget', 'reservation')
     WHERE s.path <@ u.path;
    RETURN gp_page(items, v_limit) || jsonb_build_object('unit_id', u.id, 'totals', totals);
END
$$;

-- A task's reservation for staff and auditors over the unit it was reserved against (else
-- 404): {"task_id", "unit_id", "account_id", "balance", "version", "reserved", "awarded",
-- "released", "postings": {"items", "next_cursor"}}.
CREATE FUNCTION gp_task_reservation(p_actor bigint, p_task bigint, p_after bigint DEFAULT NULL,
                                    p_limit int DEFAULT 50)
RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
DECLARE
    a accounts;
BEGIN
    SELECT * INTO a FROM accounts WHERE kind = 'reservation' AND owner_id = p_task;
    IF NOT FOUND OR a.unit_id IS NULL OR NOT gp_has_role(p_actor, gp_reader_roles(), a.unit_id) THEN
        PERFORM gp_raise('404', 'task_not_found', 'task not found', 'task_id');
    END IF;
    RETURN (SELECT jsonb_build_object('task_id', p_task, 'unit_id', a.unit_id,
                'account_id', a.id, 'balance', a.balance, 'version', a.version,
                'reserved', coalesce(sum(p.amount) FILTER (WHERE t.kind = 'reserve'), 0),
                'awarded', -coalesce(sum(p.amount) FILTER (WHERE t.kind = 'award'), 0),
                'released', -coalesce(sum(p.amount) FILTER (WHERE t.kind = 'release'), 0),
                'postings', gp_postings_page(ARRAY[a.id], NULL, NULL, NULL, p_after, p_limit))
              FROM postings p JOIN ledger_txns t ON t.id = p.txn_id
             WHERE p.account_id = a.id);
END
$$;

-- Worker balances for the cache reconciler, keyset-paginated on worker id (one snapshot per
-- page): {"items": [{"id", "worker_id", "available", "pending", "version"}], "next_cursor"}.
CREATE FUNCTION gp_ledger_snapshot(p_after bigint, p_limit int) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT gp_page(coalesce(jsonb_agg(jsonb_build_object('id', w, 'worker_id', w,
                   'available', av, 'pending', pe, 'version', ve) ORDER BY w), '[]'),
                   least(greatest(coalesce(p_limit, 500), 1), 5000))
      FROM (SELECT owner_id AS w,
                   coalesce(sum(balance) FILTER (WHERE kind = 'worker'), 0) AS av,
                   coalesce(sum(balance) FILTER (WHERE kind = 'worker_pending'), 0) AS pe,
                   sum(version) AS ve
              FROM accounts
             WHERE kind IN ('worker', 'worker_pending') AND owner_id > coalesce(p_after, 0)
             GROUP BY owner_id ORDER BY owner_id
             LIMIT least(greatest(coalesce(p_limit, 500), 1), 5000) + 1) x
$$;

-- The (unit, period) rankings that exist in PostgreSQL: every street/community/grid ancestor of
-- a worker with earnings, for every period they earned in. For the CLI rebuild.
CREATE FUNCTION gp_rank_keys() RETURNS TABLE (unit_id bigint, period text)
LANGUAGE sql STABLE AS $$
    SELECT DISTINCT a.id, e.period
      FROM worker_earnings e
      JOIN persons p ON p.id = e.person_id
      JOIN org_units u ON u.id = p.unit_id
      JOIN org_units a ON a.id = ANY (string_to_array(ltree2text(u.path), '.')::bigint[])
     WHERE a.level IN ('street', 'community', 'grid') AND e.points > 0
     ORDER BY 1, 2
$$;

------------------------------------------------------------------------------------------
-- Invariant checker (tests, the reconciler, operators). Returns the list of violations, empty
-- when the ledger is sound; one consistent snapshot. Each item: {"check", ...details}; at most
-- 100 per check.
------------------------------------------------------------------------------------------
CREATE FUNCTION gp_ledger_check() RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT coalesce(jsonb_agg(v), '[]') FROM (
        -- 1. every transaction has >= 2 postings summing to zero
        (SELECT jsonb_build_object('check', 'txn_unbalanced', 'txn_id', t.id,
                                   'postings', count(p.id), 'sum', coalesce(sum(p.amount), 0)) v
           FROM ledger_txns t LEFT JOIN postings p ON p.txn_id = t.id
          GROUP BY t.id HAVING count(p.id) < 2 OR coalesce(sum(p.amount), 0) <> 0
          ORDER BY t.id LIMIT 100)
        UNION ALL
        -- 2. every balance is the sum of its postings, every version their count
        (SELECT jsonb_build_object('check', 'balance_mismatch', 'account_id', a.id,
                                   'kind', a.kind, 'balance', a.balance,
                                   'postings_sum', coalesce(s.total, 0), 'version', a.version,
                                   'postings', coalesce(s.n, 0))
           FROM accounts a
           LEFT JOIN (SELECT account_id, sum(amount) AS total, count(*) AS n
                        FROM postings GROUP BY account_id) s ON s.account_id = a.id
          WHERE a.balance <> coalesce(s.total, 0) OR a.version <> coalesce(s.n, 0)
          ORDER BY a.id LIMIT 100)
        UNION ALL
        -- 3. postings name existing accounts; versions are 1..n and balance_after is the
        --    running sum (no hole, no reordering)
        (SELECT jsonb_build_object('check', 'posting_chain', 'posting_id', x.id,
                                   'account_id', x.account_id)
           FROM (SELECT p.id, p.account_id, p.account_version, p.balance_after, a.id AS acc,
                        row_number() OVER w AS rn, sum(p.amount) OVER w AS running
                   FROM postings p LEFT JOIN accounts a ON a.id = p.account_id
                 WINDOW w AS (PARTITION BY p.account_id ORDER BY p.account_version, p.id)) x
          WHERE x.acc IS NULL OR x.account_version <> x.rn OR x.balance_after <> x.running
          ORDER BY x.id LIMIT 100)
        UNION ALL
        -- 3b. every posting belongs to an existing transaction (no foreign key since 0019: the
        --     insert-time check postings_of_this_xact and append-only ledger_txns keep it)
        (SELECT jsonb_build_object('check', 'posting_orphan', 'posting_id', p.id,
                                   'txn_id', p.txn_id)
           FROM postings p WHERE NOT EXISTS (SELECT 1 FROM ledger_txns t WHERE t.id = p.txn_id)
          ORDER BY p.id LIMIT 100)
        UNION ALL
        -- 4. nothing negative where forbidden (the CHECK makes this impossible; belt and braces)
        (SELECT jsonb_build_object('check', 'negative_balance', 'account_id', id, 'kind', kind,
                                   'balance', balance)
           FROM accounts WHERE kind NOT IN ('issuance', 'clearing') AND balance < 0 ORDER BY id LIMIT 100)
        UNION ALL
        -- 5. trial balance: all balances sum to zero
        (SELECT jsonb_build_object('check', 'trial_balance', 'sum', sum(balance))
           FROM accounts HAVING coalesce(sum(balance), 0) <> 0)
        UNION ALL
        -- 6. open lots never exceed the worker's available balance
        (SELECT jsonb_build_object('check', 'lots_exceed_balance', 'worker_id', l.worker_id,
                                   'lots', sum(l.remaining), 'balance', coalesce(max(a.balance), 0))
           FROM point_lots l
           LEFT JOIN accounts a ON a.kind = 'worker' AND a.owner_id = l.worker_id
          WHERE l.remaining > 0
          GROUP BY l.worker_id HAVING sum(l.remaining) > coalesce(max(a.balance), 0)
          ORDER BY l.worker_id LIMIT 100)
        UNION ALL
        -- 7. unvested pending points equal the pending balances
        (SELECT jsonb_build_object('check', 'pending_mismatch', 'worker_id', a.owner_id,
                                   'pending_balance', a.balance, 'pending_rows', coalesce(q.s, 0))
           FROM accounts a
           LEFT JOIN (SELECT worker_id, sum(amount) AS s FROM pending_points
                       WHERE vest_txn_id IS NULL GROUP BY worker_id) q
                  ON q.worker_id = a.owner_id
          WHERE a.kind = 'worker_pending' AND a.balance <> coalesce(q.s, 0)
          ORDER BY a.owner_id LIMIT 100)
        UNION ALL
        -- 8. all-time earnings equal the awards paid
        (SELECT jsonb_build_object('check', 'earnings_mismatch', 'worker_id', x.w,
                                   'earned', x.earned, 'awarded', x.awarded)
           FROM (SELECT coalesce(e.person_id, aw.w) AS w, coalesce(e.points, 0) AS earned,
                        coalesce(aw.total, 0) AS awarded
                   FROM (SELECT person_id, points FROM worker_earnings WHERE period = 'all') e
                   FULL JOIN (SELECT (t.refs ->> 'worker_id')::bigint AS w,
                                     sum(p.amount) AS total
                                FROM ledger_txns t JOIN postings p ON p.txn_id = t.id
                                JOIN accounts a ON a.id = p.account_id
                                                AND a.kind IN ('worker', 'worker_pending')
                               WHERE t.kind = 'award' GROUP BY 1) aw ON aw.w = e.person_id) x
          WHERE x.earned <> x.awarded ORDER BY x.w LIMIT 100)
        UNION ALL
        -- 9. one street per transaction (0024): every posting carries its transaction's street,
        --    and every account it moves is of that street or a legacy system account (street 0)
        (SELECT jsonb_build_object('check', 'street_mismatch', 'posting_id', p.id,
                                   'txn_id', p.txn_id, 'posting_street', p.street_id,
                                   'txn_street', t.street_id, 'account_street', a.street_id)
           FROM postings p JOIN ledger_txns t ON t.id = p.txn_id
           LEFT JOIN accounts a ON a.id = p.account_id
          WHERE p.street_id <> t.street_id OR (a.street_id <> 0 AND a.street_id <> t.street_id)
          ORDER BY p.id LIMIT 100)
    ) checks
$$;

-- SECURITY DEFINER functions are callable by gp_app only (not PUBLIC); gp_lot_put not even by
-- gp_app (it is internal to the award and the sweep).
REVOKE EXECUTE ON FUNCTION
    gp_account_of(text, bigint, bigint),
    gp_accounts_lock(bigint[]),
    gp_worker_try_lock(bigint),
    gp_ledger_post_core(text, bigint, jsonb, text, bigint[], bigint[], text, text),
    gp_ledger_post_legs(text, bigint, jsonb, text, bigint[], bigint[], text, text),
    gp_ledger_post(text, bigint, jsonb, text, jsonb, text, text),
    gp_lot_put(bigint, bigint, bigint, timestamptz, timestamptz, bigint),
    gp_worker_add_lot(bigint, bigint, bigint, timestamptz),
    gp_worker_spend_lots(bigint, bigint),
    gp_lots_spend(bigint, bigint),
    gp_award_from(bigint, jsonb, bigint, bigint, bigint),
    gp_task_award(bigint, bigint, bigint, bigint, bigint),
    gp_task_award_many(bigint, bigint[], bigint[], bigint, bigint),
    gp_ledger_sweep(int)
FROM PUBLIC;

GRANT EXECUTE ON FUNCTION
    gp_account_of(text, bigint, bigint),
    gp_accounts_lock(bigint[]),
    gp_worker_try_lock(bigint),
    gp_ledger_post_core(text, bigint, jsonb, text, bigint[], bigint[], text, text),
    gp_ledger_post_legs(text, bigint, jsonb, text, bigint[], bigint[], text, text),
    gp_ledger_post(text, bigint, jsonb, text, jsonb, text, text),
    gp_worker_add_lot(bigint, bigint, bigint, timestamptz),
    gp_worker_spend_lots(bigint, bigint),
    gp_lots_spend(bigint, bigint),
    gp_award_from(bigint, jsonb, bigint, bigint, bigint),
    gp_task_award(bigint, bigint, bigint, bigint, bigint),
    gp_task_award_many(bigint, bigint[], bigint[], bigint, bigint),
    gp_ledger_sweep(int)
TO gp_app;

