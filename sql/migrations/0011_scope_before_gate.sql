-- sql/0011_scope_before_gate.sql
-- Scope before any fast path (issue 10, item 8). No cache, gate or rate limit may answer a
-- caller differently for an object outside their scope than for a missing one.
--
-- 1. The Redis claim gate answered task_full to anyone, so a worker of another street learned
--    that a task exists and is full while every other request about it said task_not_found.
--    The gate now only answers for a caller already known to be in the task's area: the gate
--    object carries the task's unit ("unit_id"), and the session principal carries what the
--    server needs to check the caller against it without a round trip -- "area" (the home
--    unit's path: the ids of the unit and its ancestors) and "worker" (gp_task_is_worker).
--    A task on unit U reaches a worker exactly when U is in their area (gp_task_in_area).
-- 2. A counter charge told a merchant whether another area's worker's pay code was used or
--    expired, and that the worker was outside its area (403 worker_not_served), where a pay
--    code that does not exist says 404 paycode_not_found. A pay code of a worker the merchant
--    does not serve now is paycode_not_found, whatever its state, and the scope is checked
--    before the state.
-- Otherwise unchanged from sql/0002_org_people.sql, sql/0004_tasks.sql and
-- sql/0005_merchants.sql.

CREATE OR REPLACE FUNCTION gp_task_slots_json(t tasks) RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
    SELECT jsonb_build_object('task_id', t.id, 'unit_id', t.unit_id,
                              'free_slots', gp_task_free_slots(t), 'slots_version', t.version)
$$;

-- What a request needs to know about its caller; NULL when the token is unknown, expired or
-- revoked, or the person is suspended. "area" and "worker" let the server's claim gate check
-- gp_task_in_area without asking PostgreSQL.
CREATE OR REPLACE FUNCTION gp_session_principal(p_token_hash bytea) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('person_id', p.id, 'name', p.name, 'unit_id', p.unit_id,
                              'roles', gp_roles_json(p.id), 'expires_at', s.expires_at,
                              'ttl', greatest(0, extract(epoch FROM s.expires_at - now())::bigint),
                              'area', ltree2text(u.path), 'worker', gp_task_is_worker(p.id))
      FROM sessions s JOIN persons p ON p.id = s.person_id
      JOIN org_units u ON u.id = p.unit_id
     WHERE s.token_hash = p_token_hash AND s.revoked_at IS NULL AND s.expires_at > now()
       AND p.status = 'active'
$$;

-- Charges p_amount points with a pay code whose signature the server has checked (worker ->
-- merchant, kind 'charge'). The pay code must belong to p_worker and the worker must live in
-- the area the merchant serves (else 404 paycode_not_found, like a pay code that does not
-- exist: a merchant learns nothing about the codes of workers it does not serve), and it must
-- be unused and unexpired by the database clock (409 paycode_used / paycode_expired).
-- Idempotent on (merchant principal, key): the same key with another amount is 422.
CREATE OR REPLACE FUNCTION gp_mrc_charge(p_key_id text, p_nonce text, p_worker bigint,
                                         p_amount bigint, p_memo text, p_idem_principal text,
                                         p_idem_key text, p_request_hash text)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    m merchants := gp_mrc_principal(p_key_id);
    v_prev jsonb;
    pc paycodes;
    c charges;
    v_wacc bigint;
    v_acc bigint;
    v_txn bigint;
    v_spend jsonb;
    v_resp jsonb;
BEGIN
    v_prev := gp_idem_begin(p_idem_principal, p_idem_key, coalesce(p_request_hash, ''));
    IF v_prev IS NOT NULL THEN
        RETURN v_prev;
    END IF;
    IF p_amount IS NULL OR p_amount < 1 OR p_amount > 1000000000 THEN
        PERFORM gp_raise('400', 'invalid_amount', 'amount must be between 1 and 1000000000', 'amount');
    END IF;
    SELECT * INTO pc FROM paycodes WHERE nonce = p_nonce FOR UPDATE;
    IF NOT FOUND OR pc.worker_id <> p_worker
       OR NOT EXISTS (SELECT 1 FROM persons p JOIN org_units pu ON pu.id = p.unit_id
                        JOIN org_units mu ON mu.id = m.unit_id
                       WHERE p.id = p_worker AND p.status = 'active' AND pu.path <@ mu.path) THEN
        PERFORM gp_raise('404', 'paycode_not_found', 'pay code not found', 'paycode');
    END IF;
    IF pc.used_at IS NOT NULL THEN
        PERFORM gp_raise('409', 'paycode_used', 'this pay code has been used', 'paycode');
    END IF;
    IF pc.expires_at <= now() THEN
        PERFORM gp_raise('409', 'paycode_expired', 'this pay code has expired', 'paycode');
    END IF;
    v_wacc := gp_account_of('worker', p_worker);
    v_acc := gp_mrc_account(m.id);
    PERFORM gp_accounts_lock(ARRAY[v_wacc, v_acc]);
    PERFORM gp_mrc_check_period(m.id);
    c.id := nextval('charges_id_seq');
    v_txn := gp_ledger_post_legs('charge', NULL,
        jsonb_build_object('charge_id', c.id, 'merchant_id', m.id, 'worker_id', p_worker,
                           'key_id', p_key_id), p_memo,
        ARRAY[v_wacc, v_acc], ARRAY[-p_amount, p_amount], p_idem_principal, p_idem_key);
    v_spend := gp_worker_spend_lots(p_worker, p_amount);
    INSERT INTO charges (id, merchant_id, worker_id, amount, paycode, memo, txn_id, spend)
    VALUES (c.id, m.id, p_worker, p_amount, p_nonce, p_memo, v_txn, v_spend) RETURNING * INTO c;
    UPDATE paycodes SET used_at = now(), charge_id = c.id WHERE nonce = p_nonce;
    PERFORM gp_mrc_event(m.id, 'charge.created', gp_charge_json(c, 'merchant'));
    PERFORM gp_outbox('charge.created', p_worker,
        jsonb_build_object('charge_id', c.id, 'txn_id', v_txn, 'amount', p_amount,
                           'merchant_id', m.id));
    v_resp := gp_charge_json(c, 'merchant')
        || jsonb_build_object('receipt', jsonb_build_object('txn_id', v_txn),
                              'balances', jsonb_build_array(gp_worker_state(p_worker)));
    RETURN gp_idem_finish(p_idem_principal, p_idem_key, coalesce(p_request_hash, ''), v_resp);
END
$$;
