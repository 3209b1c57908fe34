-- sql/functions/85_exchange.sql
-- Points exchange with partner schemes (积分互通): partners, links, transfers both ways, the
-- sender's durable timer, daily statements, reconciliation and settlement. The protocol is in
-- docs/EXCHANGE.md; the tables in sql/migrations/0016_exchange.sql.
--
-- Ledger: every movement is one ledger transaction of kind 'exchange' (refs name the transfer):
--   out, hold      worker -> xhold(transfer)          when the worker asks
--   out, accepted  xhold(transfer) -> clearing(partner)
--   out, rejected  xhold(transfer) -> worker           (the points go back into their lots)
--   in, accepted   clearing(partner) -> worker        at the rate, exactly once per id
-- Rounding never creates points: only amounts that convert exactly at the partner's rate may
-- be sent (400 inexact_amount otherwise), and a receiver refuses a transfer whose credit is
-- not exactly the amount at its own rate (rejected, rate_mismatch). There is no remainder.

------------------------------------------------------------------------------------------
-- Shared steps
------------------------------------------------------------------------------------------
CREATE FUNCTION gp_xchg_partner_json(p exchange_partners) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('id', p.id, 'street_id', p.street_id, 'code', p.code,
        'name', p.name, 'base_url', p.base_url, 'out_key_id', p.out_key_id,
        'in_key_id', p.in_key_id, 'rate', jsonb_build_object('num', p.rate_num, 'den', p.rate_den),
        'worker_daily_limit', p.worker_daily_limit, 'partner_daily_limit', p.partner_daily_limit,
        'enabled', p.enabled, 'created_at', p.created_at, 'updated_at', p.updated_at,
        'clearing_balance', (SELECT balance FROM accounts WHERE kind = 'clearing'
                                                          AND owner_id = p.id))
$$;

CREATE FUNCTION gp_xchg_transfer_json(t exchange_transfers) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('id', t.id, 'transfer_id', t.transfer_id, 'partner_id', t.partner_id,
        'direction', t.direction, 'worker_id', t.worker_id, 'amount', t.amount,
        'remote_amount', t.remote_amount, 'state', t.state, 'reason', t.reason,
        'sent_at', t.sent_at, 'created_at', t.created_at, 'decided_at', t.decided_at,
        'attempts', t.attempts, 'last_error', t.last_error)
$$;

-- The protocol's view of a transfer (statements, replies): publisher's direction and points.
CREATE FUNCTION gp_xchg_wire_state(t exchange_transfers) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE t.state WHEN 'completed' THEN 'accepted' ELSE t.state END
$$;

-- Street admin of the partner's street, or 404 as for a missing partner.
CREATE FUNCTION gp_xchg_partner_require(p_actor bigint, p_partner bigint, p_admin boolean)
RETURNS exchange_partners LANGUAGE plpgsql STABLE AS $$
DECLARE
    p exchange_partners;
BEGIN
    SELECT * INTO p FROM exchange_partners WHERE id = p_partner;
    IF NOT FOUND OR (p_admin AND gp_admin_rank(p_actor, p.street_id) < 3)
       OR (NOT p_admin AND NOT gp_has_role(p_actor, gp_reader_roles() || ARRAY['auditor'],
                                           p.street_id)) THEN
        PERFORM gp_raise('404', 'partner_not_found', 'partner not found', 'partner_id');
    END IF;
    RETURN p;
END
$$;

-- A partner of the worker's own street, or 404.
CREATE FUNCTION gp_xchg_worker_partner(p_actor bigint, p_partner bigint) RETURNS exchange_partners
LANGUAGE plpgsql STABLE AS $$
DECLARE
    p exchange_partners;
BEGIN
    SELECT x.* INTO p FROM exchange_partners x JOIN persons pe ON pe.id = p_actor
     WHERE x.id = p_partner AND x.street_id = gp_street_of_unit(pe.unit_id);
    IF NOT FOUND OR NOT gp_task_is_worker(p_actor) THEN
        PERFORM gp_raise('404', 'partner_not_found', 'partner not found', 'partner_id');
    END IF;
    RETURN p;
END
$$;

-- Points already moved today (UTC, our clock) by a worker / with a partner, both directions,
-- counting what is pending.
CREATE FUNCTION gp_xchg_used_today(p_partner bigint, p_worker bigint) RETURNS bigint
LANGUAGE sql STABLE AS $$
    SELECT coalesce(sum(amount), 0)::bigint FROM exchange_transfers
     WHERE partner_id = p_partner AND (p_worker IS NULL OR worker_id = p_worker)
       AND state IN ('pending', 'completed', 'accepted')
       AND created_at >= date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
$$;

-- Why a transfer of p_amount (our points) by p_worker would exceed a limit, or NULL.
CREATE FUNCTION gp_xchg_limit_reason(p exchange_partners, p_worker bigint, p_amount bigint)
RETURNS text LANGUAGE sql STABLE AS $$
    SELECT CASE
        WHEN gp_xchg_used_today(p.id, p_worker) + p_amount > p.worker_daily_limit
            THEN 'worker_limit_exceeded'
        WHEN gp_xchg_used_today(p.id, NULL) + p_amount > p.partner_daily_limit
            THEN 'partner_limit_exceeded'
    END
$$;

------------------------------------------------------------------------------------------
-- Partners (street admin)
------------------------------------------------------------------------------------------
-- p_args was checked by the server (api_exchange.c): unit_id, code, name, base_url,
-- out_key_id, in_key_id, rate_num, rate_den, worker_daily_limit, partner_daily_limit, enabled.
-- The secrets arrive sealed.
CREATE FUNCTION gp_xchg_partner_create(p_actor bigint, p_args jsonb, p_out_ct text, p_in_ct text)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    u org_units := gp_require_unit(p_actor, (p_args ->> 'unit_id')::bigint, gp_reader_roles());
    v_street bigint := gp_street_of_unit(u.id);
    p exchange_partners;
BEGIN
    IF gp_admin_rank(p_actor, v_street) < 3 THEN
        PERFORM gp_raise('403', 'forbidden', 'only a street admin can register partners',
                         'unit_id');
    END IF;
    BEGIN
        INSERT INTO exchange_partners (street_id, code, name, base_url, out_key_id, out_secret_ct,
                                       in_key_id, in_secret_ct, rate_num, rate_den,
                                       worker_daily_limit, partner_daily_limit, enabled, created_by)
        VALUES (v_street, p_args ->> 'code', p_args ->> 'name', p_args ->> 'base_url',
                p_args ->> 'out_key_id', p_out_ct, p_args ->> 'in_key_id', p_in_ct,
                (p_args ->> 'rate_num')::int, (p_args ->> 'rate_den')::int,
                (p_args ->> 'worker_daily_limit')::bigint,
                (p_args ->> 'partner_daily_limit')::bigint,
                coalesce((p_args ->> 'enabled')::boolean, true), p_actor)
        RETURNING * INTO p;
    EXCEPTION
        WHEN unique_violation THEN
            PERFORM gp_raise('409', 'partner_exists',
                             'a partner with this code or key id exists', 'code');
    END;
    PERFORM gp_account_of('clearing', p.id, v_street);
    PERFORM gp_audit(p_actor, 'exchange.partner.create', 'exchange_partner', p.id::text,
                     v_street, NULL, gp_xchg_partner_json(p));
    RETURN gp_xchg_partner_json(p);
END
$$;

-- p_args (checked by the server): any of enabled, base_url, worker_daily_limit,
-- partner_daily_limit.
CREATE FUNCTION gp_xchg_partner_update(p_actor bigint, p_partner bigint, p_args jsonb)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    p exchange_partners := gp_xchg_partner_require(p_actor, p_partner, true);
    n exchange_partners;
BEGIN
    UPDATE exchange_partners SET
        enabled = coalesce((p_args ->> 'enabled')::boolean, enabled),
        base_url = coalesce(p_args ->> 'base_url', base_url),
        worker_daily_limit = coalesce((p_args ->> 'worker_daily_limit')::bigint, worker_daily_limit),
        partner_daily_limit = coalesce((p_args ->> 'partner_daily_limit')::bigint,
                                       partner_daily_limit),
        updated_at = now()
     WHERE id = p.id RETURNING * INTO n;
    PERFORM gp_audit(p_actor, 'exchange.partner.update', 'exchange_partner', p.id::text,
                     p.street_id, gp_xchg_partner_json(p), gp_xchg_partner_json(n));
    RETURN gp_xchg_partner_json(n);
END
$$;

CREATE FUNCTION gp_xchg_partner_get(p_actor bigint, p_partner bigint) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT gp_xchg_partner_json(gp_xchg_partner_require(p_actor, p_partner, false))
$$;

-- Partners the caller sees: a reader's streets' partners, or a worker's own street's (without
-- keys and limits of other streets).
CREATE FUNCTION gp_xchg_partner_list(p_actor bigint) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('items', coalesce(jsonb_agg(
               CASE WHEN gp_has_role(p_actor, gp_reader_roles() || ARRAY['auditor'], p.street_id)
                    THEN gp_xchg_partner_json(p)
                    ELSE jsonb_build_object('id', p.id, 'code', p.code, 'name', p.name,
                             'rate', jsonb_build_object('num', p.rate_num, 'den', p.rate_den),
                             'worker_daily_limit', p.worker_daily_limit, 'enabled', p.enabled)
               END ORDER BY p.id), '[]'))
      FROM exchange_partners p
     WHERE gp_has_role(p_actor, gp_reader_roles() || ARRAY['auditor'], p.street_id)
        OR (gp_task_is_worker(p_actor)
            AND p.street_id = (SELECT gp_street_of_unit(unit_id) FROM persons WHERE id = p_actor))
$$;

-- The partner behind a signing key (the partner signature guard): its sealed secret.
CREATE FUNCTION gp_xchg_partner_by_key(p_key_id text) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('partner_id', id, 'street_id', street_id, 'secret_ct', in_secret_ct,
                              'enabled', enabled)
      FROM exchange_partners WHERE in_key_id = p_key_id
$$;

-- What the server needs to call the partner (exchange.c).
CREATE FUNCTION gp_xchg_call_info(p exchange_partners) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('partner_id', p.id, 'base_url', p.base_url,
                              'key_id', p.out_key_id, 'secret_ct', p.out_secret_ct)
$$;

------------------------------------------------------------------------------------------
-- Links
------------------------------------------------------------------------------------------
-- A one-time link code for the caller's account (the code is made by the server; only its
-- hash is stored). Given in the partner scheme's app, it links the two accounts.
CREATE FUNCTION gp_xchg_link_code_create(p_actor bigint, p_partner bigint, p_code_hash text,
                                         p_ttl_s int) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    p exchange_partners := gp_xchg_worker_partner(p_actor, p_partner);
    c exchange_link_codes;
BEGIN
    IF NOT p.enabled THEN
        PERFORM gp_raise('409', 'partner_disabled', 'exchange with this partner is disabled',
                         'partner_id');
    END IF;
    INSERT INTO exchange_link_codes (street_id, partner_id, worker_id, code_hash, expires_at)
    VALUES (p.street_id, p.id, p_actor, p_code_hash, now() + make_interval(secs => p_ttl_s))
    RETURNING * INTO c;
    RETURN jsonb_build_object('partner_id', p.id, 'expires_at', c.expires_at);
END
$$;

-- Before the server asks the partner to confirm a code: the call and a fresh account ref.
CREATE FUNCTION gp_xchg_link_prepare(p_actor bigint, p_partner bigint) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    p exchange_partners := gp_xchg_worker_partner(p_actor, p_partner);
BEGIN
    IF NOT p.enabled THEN
        PERFORM gp_raise('409', 'partner_disabled', 'exchange with this partner is disabled',
                         'partner_id');
    END IF;
    IF EXISTS (SELECT 1 FROM exchange_links WHERE partner_id = p.id AND worker_id = p_actor
                                              AND unlinked_at IS NULL) THEN
        PERFORM gp_raise('409', 'already_linked', 'your account is already linked with this partner',
                         'partner_id');
    END IF;
    RETURN gp_xchg_call_info(p) || jsonb_build_object(
        'local_ref', 'xa_' || substr(md5(random()::text || clock_timestamp()::text), 1, 24));
END
$$;

CREATE FUNCTION gp_xchg_link_json(l exchange_links) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('id', l.id, 'partner_id', l.partner_id, 'worker_id', l.worker_id,
        'account', l.local_ref, 'partner_account', l.remote_ref, 'created_at', l.created_at,
        'unlinked_at', l.unlinked_at)
$$;

-- The partner confirmed the code: the link, on our side.
CREATE FUNCTION gp_xchg_link_finish(p_actor bigint, p_partner bigint, p_local_ref text,
                                    p_remote_ref text) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    p exchange_partners := gp_xchg_worker_partner(p_actor, p_partner);
    l exchange_links;
BEGIN
    BEGIN
        INSERT INTO exchange_links (street_id, partner_id, worker_id, local_ref, remote_ref)
        VALUES (p.street_id, p.id, p_actor, p_local_ref, p_remote_ref) RETURNING * INTO l;
    EXCEPTION WHEN unique_violation THEN
        PERFORM gp_raise('409', 'already_linked',
                         'this account is already linked with this partner', 'partner_id');
    END;
    PERFORM gp_audit(p_actor, 'exchange.link', 'exchange_link', l.id::text, p.street_id, NULL,
                     gp_xchg_link_json(l));
    RETURN gp_xchg_link_json(l);
END
$$;

-- Partner-facing: the partner's worker gave one of our link codes. Returns our account ref.
CREATE FUNCTION gp_xchg_link_confirm(p_partner bigint, p_code_hash text, p_remote_ref text)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    c exchange_link_codes;
    l exchange_links;
BEGIN
    IF NOT (SELECT enabled FROM exchange_partners WHERE id = p_partner) THEN
        PERFORM gp_raise('409', 'partner_disabled', 'exchange with this partner is disabled', NULL);
    END IF;
    UPDATE exchange_link_codes SET used_at = now()
     WHERE code_hash = p_code_hash AND partner_id = p_partner AND used_at IS NULL
       AND expires_at > now()
    RETURNING * INTO c;
    IF NOT FOUND THEN
        PERFORM gp_raise('404', 'link_code_not_found', 'unknown, used or expired link code', 'code');
    END IF;
    BEGIN
        INSERT INTO exchange_links (street_id, partner_id, worker_id, local_ref, remote_ref)
        VALUES (c.street_id, p_partner, c.worker_id,
                'xa_' || substr(md5(random()::text || clock_timestamp()::text), 1, 24),
                p_remote_ref)
        RETURNING * INTO l;
    EXCEPTION WHEN unique_violation THEN
        PERFORM gp_raise('409', 'already_linked', 'this account is already linked', 'code');
    END;
    PERFORM gp_audit(NULL, 'exchange.link', 'exchange_link', l.id::text, c.street_id, NULL,
                     gp_xchg_link_json(l));
    RETURN jsonb_build_object('account', l.local_ref);
END
$$;

CREATE FUNCTION gp_xchg_links(p_actor bigint) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('items', coalesce(jsonb_agg(gp_xchg_link_json(l) ORDER BY l.id), '[]'))
      FROM exchange_links l WHERE l.worker_id = p_actor AND l.unlinked_at IS NULL
$$;

CREATE FUNCTION gp_xchg_unlink(p_actor bigint, p_link bigint) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    l exchange_links;
BEGIN
    UPDATE exchange_links SET unlinked_at = now()
     WHERE id = p_link AND worker_id = p_actor AND unlinked_at IS NULL RETURNING * INTO l;
    IF NOT FOUND THEN
        PERFORM gp_raise('404', 'link_not_found', 'link not found', 'id');
    END IF;
    PERFORM gp_audit(p_actor, 'exchange.unlink', 'exchange_link', l.id::text, l.street_id,
                     NULL, gp_xchg_link_json(l));
    RETURN gp_xchg_link_json(l);
END
$$;

------------------------------------------------------------------------------------------
-- Transfers out (the sender)
------------------------------------------------------------------------------------------
-- The message of a transfer, as sent (docs/EXCHANGE.md "Transfer").
CREATE FUNCTION gp_xchg_message(t exchange_transfers) RETURNS text LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('transfer_id', t.transfer_id, 'from_account', t.from_account,
        'to_account', t.to_account, 'amount', t.amount, 'credit', t.remote_amount,
        'sent_at', to_char(t.sent_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'))::text
$$;

-- The worker moves p_amount of our points to their linked account in the partner scheme.
-- Holds the points and leaves the transfer pending for the timer (gp_xchg_claim), which sends
-- it at once. p_cfg: {"send_for_s"}: how long to send before asking for the status instead.
CREATE FUNCTION gp_xchg_transfer_out(p_actor bigint, p_partner bigint, p_amount bigint,
                                     p_cfg jsonb, p_idem_principal text DEFAULT NULL,
                                     p_idem_key text DEFAULT NULL,
                                     p_request_hash text DEFAULT NULL)
RETURNS gp_reply LANGUAGE plpgsql AS $$
DECLARE
    v_principal text := gp_idem_principal(p_idem_principal, p_actor);
    v_replay jsonb;
    p exchange_partners := gp_xchg_worker_partner(p_actor, p_partner);
    l exchange_links;
    t exchange_transfers;
    v_reason text;
    v_hold bigint;
    v_body jsonb;
BEGIN
    v_replay := gp_idem_begin(v_principal, p_idem_key, p_request_hash);
    IF v_replay IS NOT NULL THEN
        RETURN gp_out(v_replay);
    END IF;
    PERFORM 1 FROM exchange_partners WHERE id = p.id FOR UPDATE; -- limits: one at a time
    IF NOT p.enabled THEN
        PERFORM gp_raise('409', 'partner_disabled', 'exchange with this partner is disabled',
                         'partner_id');
    END IF;
    SELECT * INTO l FROM exchange_links WHERE partner_id = p.id AND worker_id = p_actor
                                          AND unlinked_at IS NULL;
    IF NOT FOUND THEN
        PERFORM gp_raise('409', 'not_linked', 'link your account with this partner first',
                         'partner_id');
    END IF;
    IF (p_amount::numeric * p.rate_den) % p.rate_num <> 0 THEN
        PERFORM gp_raise('400', 'inexact_amount',
            format('the amount must be a multiple of %s to convert exactly at %s:%s',
                   p.rate_num / gcd(p.rate_num, p.rate_den), p.rate_num, p.rate_den), 'amount');
    END IF;
    v_reason := gp_xchg_limit_reason(p, p_actor, p_amount);
    IF v_reason IS NOT NULL THEN
        PERFORM gp_raise('409', v_reason, 'this transfer would exceed the daily limit', 'amount');
    END IF;
    t.id := nextval('exchange_transfers_id_seq');
    v_hold := gp_account_of('xhold', t.id, p.street_id);
    t.hold_txn_id := gp_ledger_post_legs('exchange', p_actor,
        jsonb_build_object('exchange_transfer', t.id, 'partner_id', p.id, 'step', 'hold',
                           'worker_id', p_actor), NULL,
        ARRAY[gp_account_of('worker', p_actor), v_hold], ARRAY[-p_amount, p_amount]);
    t.spend := gp_worker_spend_lots(p_actor, p_amount);
    INSERT INTO exchange_transfers (id, street_id, partner_id, transfer_id, direction, link_id,
                                    worker_id, from_account, to_account, amount, remote_amount,
                                    state, sent_at, next_attempt_at, deadline, hold_txn_id, spend)
    VALUES (t.id, p.street_id, p.id,
            'xt_' || substr(md5(random()::text || clock_timestamp()::text || t.id), 1, 24), 'out',
            l.id, p_actor, l.local_ref, l.remote_ref, p_amount,
            (p_amount::numeric * p.rate_den / p.rate_num)::bigint, 'pending',
            date_trunc('second', now()), now(),
            now() + make_interval(secs => coalesce((p_cfg ->> 'send_for_s')::int, 60)),
            t.hold_txn_id, t.spend)
    RETURNING * INTO t;
    PERFORM gp_audit(p_actor, 'exchange.transfer.out', 'exchange_transfer', t.transfer_id,
                     p.street_id, NULL, gp_xchg_transfer_json(t));
    v_body := gp_xchg_transfer_json(t)
        || jsonb_build_object('balances', jsonb_build_array(gp_worker_state(p_actor)));
    RETURN gp_out(gp_idem_finish(v_principal, p_idem_key, p_request_hash, v_body),
                  gp_fx_balances(ARRAY[p_actor]));
END
$$;

-- The timer: leases due pending transfers. Each item says whether to send the transfer again
-- (until its deadline) or to ask for its status, and how to call the partner.
-- p_cfg: {"lease_s", "enabled"}.
CREATE FUNCTION gp_xchg_claim(p_batch int, p_cfg jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_batch int := least(greatest(coalesce(p_batch, 32), 1), 32);
    items jsonb;
BEGIN
    IF (p_cfg ->> 'enabled') = 'false' THEN -- exchange.enabled off: nothing is due
        RETURN jsonb_build_object('items', '[]'::jsonb, 'more', false);
    END IF;
    WITH due AS (
        SELECT id FROM exchange_transfers
         WHERE state = 'pending' AND next_attempt_at <= now()
         ORDER BY next_attempt_at LIMIT v_batch FOR UPDATE SKIP LOCKED),
    up AS (
        UPDATE exchange_transfers t SET attempts = t.attempts + 1,
               next_attempt_at = now() + make_interval(secs => coalesce((p_cfg ->> 'lease_s')::int, 30))
          FROM due WHERE t.id = due.id
        RETURNING t.*)
    SELECT coalesce(jsonb_agg(gp_xchg_call_info(p) || jsonb_build_object('id', up.id,
               'transfer_id', up.transfer_id, 'attempt', up.attempts,
               'action', CASE WHEN now() < up.deadline THEN 'send' ELSE 'query' END,
               'body', gp_xchg_message(up)) ORDER BY up.id), '[]')
      INTO items
      FROM up JOIN exchange_partners p ON p.id = up.partner_id;
    RETURN jsonb_build_object('items', items, 'more', jsonb_array_length(items) >= v_batch);
END
$$;

-- The outcome of one attempt. p_state 'accepted' or 'rejected' is definite (from a reply whose
-- signature the server verified) and applies whatever attempt it answers; NULL = no answer
-- (timeout, connection, 5xx, a bad reply): retried after p_backoff_s * 2^(attempt-1), at most
-- p_backoff_max_s, only when it is the latest attempt.
CREATE FUNCTION gp_xchg_out_result(p_id bigint, p_attempt int, p_state text, p_reason text,
                                   p_error text, p_backoff_s int, p_backoff_max_s int)
RETURNS gp_reply LANGUAGE plpgsql AS $$
DECLARE
    t exchange_transfers;
    v_txn bigint;
    v_acc bigint;
BEGIN
    SELECT * INTO t FROM exchange_transfers WHERE id = p_id AND direction = 'out' FOR UPDATE;
    IF NOT FOUND OR t.state <> 'pending' THEN
        RETURN gp_out(jsonb_build_object('id', p_id, 'applied', false));
    END IF;
    IF p_state IS NULL THEN
        IF t.attempts = p_attempt THEN
            UPDATE exchange_transfers SET last_error = left(p_error, 200),
                   next_attempt_at = now() + least(
                       make_interval(secs => p_backoff_s * power(2, least(t.attempts - 1, 20))),
                       make_interval(secs => p_backoff_max_s))
             WHERE id = t.id;
        END IF;
        RETURN gp_out(jsonb_build_object('id', p_id, 'applied', t.attempts = p_attempt,
                                         'state', 'pending'));
    END IF;
    IF p_state = 'accepted' THEN
        v_acc := gp_account_of('clearing', t.partner_id);
    ELSE
        v_acc := gp_account_of('worker', t.worker_id);
    END IF;
    v_txn := gp_ledger_post_legs('exchange', NULL,
        jsonb_build_object('exchange_transfer', t.id, 'partner_id', t.partner_id,
                           'step', p_state, 'worker_id', t.worker_id), NULL,
        ARRAY[gp_account_of('xhold', t.id), v_acc], ARRAY[-t.amount, t.amount]);
    IF p_state = 'rejected' THEN -- back into the lots the hold took them from
        PERFORM gp_mrc_restore_lots(t.worker_id, v_txn, t.spend, 0, t.amount);
    END IF;
    UPDATE exchange_transfers SET state = CASE p_state WHEN 'accepted' THEN 'completed'
                                                       ELSE 'rejected' END,
           reason = p_reason, decided_at = now(), next_attempt_at = NULL, final_txn_id = v_txn,
           last_error = NULL
     WHERE id = t.id RETURNING * INTO t;
    PERFORM gp_audit(NULL, 'exchange.transfer.' || t.state, 'exchange_transfer', t.transfer_id,
                     t.street_id, NULL, gp_xchg_transfer_json(t));
    RETURN gp_out(jsonb_build_object('id', p_id, 'applied', true, 'state', t.state),
                  gp_fx_balances(ARRAY[t.worker_id]));
END
$$;

CREATE FUNCTION gp_xchg_transfers(p_actor bigint, p_after bigint, p_limit int) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT gp_page(coalesce(jsonb_agg(gp_xchg_transfer_json(t) ORDER BY t.id DESC), '[]'), p_limit)
      FROM (SELECT * FROM exchange_transfers
             WHERE worker_id = p_actor AND (p_after IS NULL OR id < p_after)
             ORDER BY id DESC LIMIT p_limit + 1) t
$$;

CREATE FUNCTION gp_xchg_transfer_get(p_actor bigint, p_id bigint) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    t exchange_transfers;
BEGIN
    SELECT * INTO t FROM exchange_transfers WHERE id = p_id AND worker_id = p_actor;
    IF NOT FOUND THEN
        PERFORM gp_raise('404', 'transfer_not_found', 'transfer not found', 'id');
    END IF;
    RETURN gp_xchg_transfer_json(t);
END
$$;

------------------------------------------------------------------------------------------
-- Transfers in (the receiver; partner-facing, after the signature was verified)
------------------------------------------------------------------------------------------
-- The reply to the sender: the same for every delivery of the same transfer.
CREATE FUNCTION gp_xchg_wire_reply(t exchange_transfers) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('transfer_id', t.transfer_id, 'state', gp_xchg_wire_state(t),
                              'reason', t.reason, 'credit', t.amount)
$$;

-- Checks a transfer message's shape (400 naming the field).
CREATE FUNCTION gp_xchg_message_check(m jsonb) RETURNS void LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    k text;
BEGIN
    IF m IS NULL OR jsonb_typeof(m) <> 'object' THEN
        PERFORM gp_raise('400', 'invalid_body', 'the body must be a JSON object', NULL);
    END IF;
    FOR k IN SELECT jsonb_object_keys(m) LOOP
        IF k NOT IN ('transfer_id', 'from_account', 'to_account', 'amount', 'credit', 'sent_at') THEN
            PERFORM gp_raise('400', 'unknown_field', 'unknown field', k);
        END IF;
    END LOOP;
    IF jsonb_typeof(m -> 'transfer_id') IS DISTINCT FROM 'string'
       OR (m ->> 'transfer_id') !~ '^[A-Za-z0-9_-]{8,64}$' THEN
        PERFORM gp_raise('400', 'invalid_field', 'invalid transfer_id', 'transfer_id');
    END IF;
    FOREACH k IN ARRAY ARRAY['from_account', 'to_account'] LOOP
        IF jsonb_typeof(m -> k) IS DISTINCT FROM 'string' OR length(m ->> k) NOT BETWEEN 1 AND 64 THEN
            PERFORM gp_raise('400', 'invalid_field', 'invalid account', k);
        END IF;
    END LOOP;
    FOREACH k IN ARRAY ARRAY['amount', 'credit'] LOOP
        IF jsonb_typeof(m -> k) IS DISTINCT FROM 'number' OR (m ->> k)::numeric <> trunc((m ->> k)::numeric)
           OR (m ->> k)::numeric NOT BETWEEN 1 AND 1000000000000 THEN
            PERFORM gp_raise('400', 'invalid_field', 'must be a positive integer', k);
        END IF;
    END LOOP;
    IF jsonb_typeof(m -> 'sent_at') IS DISTINCT FROM 'string'
       OR (m ->> 'sent_at') !~ '^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$' THEN
        PERFORM gp_raise('400', 'invalid_field', 'sent_at must be YYYY-MM-DDTHH:MM:SSZ', 'sent_at');
    END IF;
    BEGIN
        PERFORM (m ->> 'sent_at')::timestamptz;
    EXCEPTION WHEN others THEN
        PERFORM gp_raise('400', 'invalid_field', 'sent_at is not a time', 'sent_at');
    END;
END
$$;

-- The stored transfer of this id from this partner, after checking that the message is the
-- same transfer (409 transfer_conflict for another message under the same id).
CREATE FUNCTION gp_xchg_same(t exchange_transfers, m jsonb) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF t.from_account <> m ->> 'from_account' OR t.to_account <> m ->> 'to_account'
       OR t.remote_amount <> (m ->> 'amount')::bigint OR t.amount <> (m ->> 'credit')::bigint THEN
        PERFORM gp_raise('409', 'transfer_conflict',
                         'another transfer was received under this transfer_id', 'transfer_id');
    END IF;
END
$$;

-- Receives a transfer: decides it once (accepted: clearing -> worker at the rate; rejected
-- with a reason), and answers every later delivery of the same id with the same reply.
-- p_query: a status query (docs/EXCHANGE.md): a transfer never received is recorded as
-- rejected (not_received), so that it can never be accepted later and the answer is final.
CREATE FUNCTION gp_xchg_transfer_in(p_partner bigint, m jsonb, p_query boolean DEFAULT false)
RETURNS gp_reply LANGUAGE plpgsql AS $$
DECLARE
    p exchange_partners;
    l exchange_links;
    t exchange_transfers;
    v_reason text;
    v_credit numeric;
    v_txn bigint;
BEGIN
    PERFORM gp_xchg_message_check(m);
    SELECT * INTO p FROM exchange_partners WHERE id = p_partner FOR UPDATE;
    SELECT * INTO t FROM exchange_transfers
     WHERE partner_id = p.id AND direction = 'in' AND transfer_id = m ->> 'transfer_id';
    IF FOUND THEN
        PERFORM gp_xchg_same(t, m);
        RETURN gp_out(gp_xchg_wire_reply(t));
    END IF;
    SELECT * INTO l FROM exchange_links
     WHERE partner_id = p.id AND local_ref = m ->> 'to_account'
       AND remote_ref = m ->> 'from_account' AND unlinked_at IS NULL;
    v_credit := (m ->> 'amount')::numeric * p.rate_num / p.rate_den;
    v_reason := CASE
        WHEN p_query THEN 'not_received'
        WHEN NOT p.enabled THEN 'partner_disabled'
        WHEN l.id IS NULL THEN 'unknown_link'
        WHEN v_credit <> trunc(v_credit) OR v_credit <> (m ->> 'credit')::numeric THEN 'rate_mismatch'
        ELSE gp_xchg_limit_reason(p, l.worker_id, (m ->> 'credit')::bigint)
    END;
    INSERT INTO exchange_transfers (street_id, partner_id, transfer_id, direction, link_id,
                                   worker_id, from_account, to_account, amount, remote_amount,
                                   state, reason, sent_at, decided_at)
    VALUES (p.street_id, p.id, m ->> 'transfer_id', 'in', l.id, l.worker_id,
            m ->> 'from_account', m ->> 'to_account', (m ->> 'credit')::bigint,
            (m ->> 'amount')::bigint, CASE WHEN v_reason IS NULL THEN 'accepted' ELSE 'rejected' END,
            v_reason, (m ->> 'sent_at')::timestamptz, now())
    RETURNING * INTO t;
    IF v_reason IS NULL THEN
        v_txn := gp_ledger_post_legs('exchange', NULL,
            jsonb_build_object('exchange_transfer', t.id, 'partner_id', p.id, 'step', 'credit',
                               'worker_id', l.worker_id), NULL,
            ARRAY[gp_account_of('clearing', p.id), gp_account_of('worker', l.worker_id)],
            ARRAY[-t.amount, t.amount]);
        PERFORM gp_worker_add_lot(l.worker_id, v_txn, t.amount);
        UPDATE exchange_transfers SET final_txn_id = v_txn WHERE id = t.id RETURNING * INTO t;
    END IF;
    PERFORM gp_audit(NULL, 'exchange.transfer.in.' || t.state, 'exchange_transfer',
                     t.transfer_id, p.street_id, NULL, gp_xchg_transfer_json(t));
    RETURN gp_out(gp_xchg_wire_reply(t),
                  CASE WHEN v_reason IS NULL THEN gp_fx_balances(ARRAY[l.worker_id]) END);
END
$$;

------------------------------------------------------------------------------------------
-- Daily statements, reconciliation, settlement
------------------------------------------------------------------------------------------
-- The statement we publish to the partner for one day (UTC, by the sender's sent_at).
CREATE FUNCTION gp_xchg_statement(p_partner bigint, p_day date) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('day', p_day, 'transfers', coalesce(jsonb_agg(
               jsonb_build_object('transfer_id', t.transfer_id, 'direction', t.direction,
                   'amount', t.amount, 'remote_amount', t.remote_amount,
                   'state', gp_xchg_wire_state(t)) ORDER BY t.transfer_id), '[]'))
      FROM exchange_transfers t
     WHERE t.partner_id = p_partner
       AND t.sent_at >= p_day::timestamp AT TIME ZONE 'UTC'
       AND t.sent_at < (p_day + 1)::timestamp AT TIME ZONE 'UTC'
$$;

-- Compares our statement of a day with the partner's (p_theirs: their "transfers", NULL when
-- it could not be fetched: p_error says why) transfer by transfer, and records the result and
-- the mismatches of that day (replacing an earlier run's). Pending transfers on either side
-- are in flight, not mismatches.
CREATE FUNCTION gp_xchg_reconcile(p_partner bigint, p_day date, p_theirs jsonb, p_error text)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    p exchange_partners;
    v_ours jsonb;
    v_n int := 0;
    r exchange_reconciliations;
BEGIN
    SELECT * INTO p FROM exchange_partners WHERE id = p_partner;
    v_ours := gp_xchg_statement(p_partner, p_day) -> 'transfers';
    DELETE FROM exchange_mismatches WHERE partner_id = p_partner AND day = p_day;
    IF p_theirs IS NOT NULL THEN
        WITH o AS (SELECT x ->> 'transfer_id' AS id, x FROM jsonb_array_elements(v_ours) x),
             t AS (SELECT x ->> 'transfer_id' AS id, x FROM jsonb_array_elements(p_theirs) x
                    WHERE jsonb_typeof(x) = 'object'),
             j AS (SELECT coalesce(o.id, t.id) AS id, o.x AS ours, t.x AS theirs
                     FROM o FULL JOIN t ON t.id = o.id),
             k AS (SELECT id, ours, theirs, CASE
                     WHEN ours ->> 'state' = 'pending' OR theirs ->> 'state' = 'pending' THEN NULL
                     WHEN ours IS NULL THEN 'missing_here'
                     WHEN theirs IS NULL THEN 'missing_there'
                     WHEN ours ->> 'direction' = theirs ->> 'direction' THEN 'state'
                     WHEN ours ->> 'amount' IS DISTINCT FROM theirs ->> 'remote_amount'
                       OR ours ->> 'remote_amount' IS DISTINCT FROM theirs ->> 'amount' THEN 'amount'
                     WHEN ours ->> 'state' IS DISTINCT FROM theirs ->> 'state' THEN 'state'
                   END AS kind FROM j),
             ins AS (INSERT INTO exchange_mismatches (street_id, partner_id, day, transfer_id,
                                                      kind, ours, theirs)
                     SELECT p.street_id, p.id, p_day, left(coalesce(id, '?'), 64), kind, ours, theirs
                       FROM k WHERE kind IS NOT NULL RETURNING 1)
        SELECT count(*) INTO v_n FROM ins;
    END IF;
    INSERT INTO exchange_reconciliations AS x (street_id, partner_id, day, ours, theirs,
                                               mismatches, error)
    VALUES (p.street_id, p.id, p_day, jsonb_array_length(v_ours),
            coalesce(jsonb_array_length(p_theirs), 0), v_n, left(p_error, 200))
    ON CONFLICT (partner_id, day) DO UPDATE
       SET checked_at = now(), ours = EXCLUDED.ours, theirs = EXCLUDED.theirs,
           mismatches = EXCLUDED.mismatches, error = EXCLUDED.error
    RETURNING * INTO r;
    RETURN jsonb_build_object('partner_id', p.id, 'day', p_day, 'ours', r.ours,
        'theirs', r.theirs, 'error', r.error, 'checked_at', r.checked_at,
        'mismatches', (SELECT coalesce(jsonb_agg(jsonb_build_object('transfer_id', transfer_id,
                           'kind', kind, 'ours', ours, 'theirs', theirs) ORDER BY transfer_id), '[]')
                         FROM exchange_mismatches WHERE partner_id = p.id AND day = p_day));
END
$$;

-- Before an admin's reconciliation of one day: the call to fetch the partner's statement.
CREATE FUNCTION gp_xchg_recon_prepare(p_actor bigint, p_partner bigint) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT gp_xchg_call_info(gp_xchg_partner_require(p_actor, p_partner, true))
$$;

-- The reconciliation timer: partners whose next statement day is over (by a margin for
-- transfers still in flight, p_cfg {"lag_s", "lease_s"}), leased; each item names the day.
CREATE FUNCTION gp_xchg_recon_claim(p_batch int, p_cfg jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    items jsonb;
BEGIN
    IF (p_cfg ->> 'enabled') = 'false' THEN
        RETURN jsonb_build_object('items', '[]'::jsonb);
    END IF;
    WITH due AS (
        SELECT id FROM exchange_partners
         WHERE enabled AND (recon_next_day + 1)::timestamp AT TIME ZONE 'UTC'
                           + make_interval(secs => coalesce((p_cfg ->> 'lag_s')::int, 3600)) <= now()
           AND (recon_lease_until IS NULL OR recon_lease_until <= now())
         ORDER BY id LIMIT least(greatest(p_batch, 1), 16) FOR UPDATE SKIP LOCKED),
    up AS (
        UPDATE exchange_partners x
           SET recon_lease_until = now() + make_interval(secs => coalesce((p_cfg ->> 'lease_s')::int, 60))
          FROM due WHERE x.id = due.id RETURNING x.*)
    SELECT coalesce(jsonb_agg(gp_xchg_call_info(up) || jsonb_build_object('day', up.recon_next_day)
                              ORDER BY up.id), '[]')
      INTO items FROM up;
    RETURN jsonb_build_object('items', items);
END
$$;

-- The timer's reconciliation of a leased day: recorded, and the next day becomes due (a day
-- whose statement could not be fetched is tried again after the lease).
CREATE FUNCTION gp_xchg_recon_done(p_partner bigint, p_day date, p_theirs jsonb, p_error text)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v jsonb := gp_xchg_reconcile(p_partner, p_day, p_theirs, p_error);
BEGIN
    IF p_theirs IS NOT NULL THEN
        UPDATE exchange_partners SET recon_next_day = p_day + 1, recon_lease_until = NULL
         WHERE id = p_partner AND recon_next_day = p_day;
    END IF;
    RETURN v;
END
$$;

-- Reconciliations and mismatches of a partner (admin or auditor of its street).
CREATE FUNCTION gp_xchg_reconciliations(p_actor bigint, p_partner bigint) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    p exchange_partners := gp_xchg_partner_require(p_actor, p_partner, false);
BEGIN
    RETURN jsonb_build_object('partner_id', p.id, 'items', (SELECT coalesce(jsonb_agg(
        jsonb_build_object('day', r.day, 'checked_at', r.checked_at, 'ours', r.ours,
            'theirs', r.theirs, 'error', r.error, 'mismatches', (SELECT coalesce(jsonb_agg(
                jsonb_build_object('transfer_id', m.transfer_id, 'kind', m.kind, 'ours', m.ours,
                                   'theirs', m.theirs) ORDER BY m.transfer_id), '[]')
                FROM exchange_mismatches m WHERE m.partner_id = p.id AND m.day = r.day))
        ORDER BY r.day DESC), '[]') FROM (SELECT * FROM exchange_reconciliations
                                           WHERE partner_id = p.id ORDER BY day DESC LIMIT 100) r));
END
$$;

-- Reconciliation mismatches of the unit's street found in [from, to), as anomaly items
-- (gp_audit_anomalies, rule exchange_mismatch); at most 100.
CREATE FUNCTION gp_xchg_anomalies(u org_units, p_from timestamptz, p_to timestamptz)
RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT coalesce(jsonb_agg(jsonb_build_object('rule', 'exchange_mismatch', 'subject',
               jsonb_build_object('partner_id', m.partner_id, 'transfer_id', m.transfer_id),
               'at', m.found_at, 'evidence', jsonb_build_object('day', m.day, 'kind', m.kind,
                   'ours', m.ours, 'theirs', m.theirs)) ORDER BY m.id DESC), '[]')
      FROM (SELECT * FROM exchange_mismatches
             WHERE street_id = gp_street_of_unit(u.id) AND found_at >= p_from AND found_at < p_to
             ORDER BY id DESC LIMIT 100) m
$$;

-- Mismatches of every partner of a street (the audit API).
CREATE FUNCTION gp_xchg_audit_mismatches(p_actor bigint, p_unit bigint) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    u org_units := gp_require_unit(p_actor, p_unit, ARRAY['auditor', 'street_admin']);
BEGIN
    RETURN jsonb_build_object('unit_id', u.id, 'items', (SELECT coalesce(jsonb_agg(
        jsonb_build_object('rule', 'exchange_mismatch', 'subject',
            jsonb_build_object('partner_id', m.partner_id, 'transfer_id', m.transfer_id),
            'at', m.found_at, 'evidence', jsonb_build_object('day', m.day, 'kind', m.kind,
                'ours', m.ours, 'theirs', m.theirs)) ORDER BY m.id DESC), '[]')
        FROM (SELECT * FROM exchange_mismatches
               WHERE street_id = gp_street_of_unit(u.id) ORDER BY id DESC LIMIT 500) m));
END
$$;

-- Settles the net position with a partner over [p_from, p_to): what was sent (out,
-- completed) and received (in, accepted) by decision time, in our points. One settlement per
-- period start; the periods of a partner may not overlap.
CREATE FUNCTION gp_xchg_settle(p_actor bigint, p_partner bigint, p_from timestamptz,
                               p_to timestamptz) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    p exchange_partners := gp_xchg_partner_require(p_actor, p_partner, true);
    s exchange_settlements;
BEGIN
    IF p_to <= p_from OR p_to > now() THEN
        PERFORM gp_raise('400', 'invalid_period', 'the period must end after it starts, not in the future', 'to');
    END IF;
    PERFORM 1 FROM exchange_partners WHERE id = p.id FOR UPDATE;
    IF EXISTS (SELECT 1 FROM exchange_settlements WHERE partner_id = p.id
                AND period_start < p_to AND period_end > p_from) THEN
        PERFORM gp_raise('409', 'period_overlaps', 'this period overlaps a settled one', 'from');
    END IF;
    INSERT INTO exchange_settlements (street_id, partner_id, period_start, period_end, sent,
                                      received, net, created_by)
    SELECT p.street_id, p.id, p_from, p_to,
           coalesce(sum(amount) FILTER (WHERE direction = 'out'), 0),
           coalesce(sum(amount) FILTER (WHERE direction = 'in'), 0),
           coalesce(sum(CASE direction WHEN 'out' THEN amount ELSE -amount END), 0), p_actor
      FROM exchange_transfers
     WHERE partner_id = p.id AND state IN ('completed', 'accepted')
       AND decided_at >= p_from AND decided_at < p_to
    RETURNING * INTO s;
    PERFORM gp_audit(p_actor, 'exchange.settle', 'exchange_settlement', s.id::text, p.street_id,
                     NULL, to_jsonb(s));
    RETURN to_jsonb(s);
END
$$;

CREATE FUNCTION gp_xchg_settlements(p_actor bigint, p_partner bigint) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('items', coalesce(jsonb_agg(to_jsonb(s) ORDER BY s.period_start DESC), '[]'))
      FROM exchange_settlements s
     WHERE s.partner_id = (gp_xchg_partner_require(p_actor, p_partner, false)).id
$$;
