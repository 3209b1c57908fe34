-- sql/functions/50_merchants.sql
-- Merchants, offers, the points mall, vouchers, pay codes, charges, refunds, settlements and
-- webhooks (tables: sql/migrations/0005_merchants.sql; prose: docs/MERCHANTS.md).

------------------------------------------------------------------------------------------
-- Small helpers
------------------------------------------------------------------------------------------
-- "王秀英" -> "王*英", "李丽" -> "李*": what a merchant may see of a worker's name.
CREATE FUNCTION gp_mrc_mask_name(p text) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN length(p) <= 1 THEN '*'
                WHEN length(p) = 2 THEN left(p, 1) || '*'
                ELSE left(p, 1) || repeat('*', length(p) - 2) || right(p, 1) END
$$;

CREATE FUNCTION gp_mrc_day(p timestamptz) RETURNS timestamptz LANGUAGE sql STABLE AS $$
    SELECT date_trunc('day', p AT TIME ZONE 'Asia/Shanghai') AT TIME ZONE 'Asia/Shanghai'
$$;

CREATE FUNCTION gp_mrc_month(p timestamptz) RETURNS timestamptz LANGUAGE sql STABLE AS $$
    SELECT date_trunc('month', p AT TIME ZONE 'Asia/Shanghai') AT TIME ZONE 'Asia/Shanghai'
$$;

-- A voucher code: 12 symbols of Crockford's base32 (60 random bits from gen_random_uuid,
-- i.e. pg_strong_random; the uuid's version and variant bytes are skipped), in groups of four
-- so that it can be read out at a counter: "7K3M-Q9XD-2HWT".
CREATE FUNCTION gp_mrc_new_code() RETURNS text LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    alphabet constant text := '0123456789ABCDEFGHJKMNPQRSTVWXYZ';
    b bytea := decode(replace(gen_random_uuid()::text, '-', ''), 'hex');
    idx constant int[] := ARRAY[0, 1, 2, 3, 4, 5, 7, 9, 10, 11, 12, 13];
    s text := '';
    i int;
BEGIN
    FOR i IN 1 .. 12 LOOP
        s := s || substr(alphabet, (get_byte(b, idx[i]) % 32) + 1, 1);
        IF i IN (4, 8) THEN
            s := s || '-';
        END IF;
    END LOOP;
    RETURN s;
END
$$;

-- What a person types or scans into the canonical code: case and separators do not matter,
-- and the letters Crockford maps (O -> 0, I/L -> 1) are accepted. NULL when it is no code.
CREATE FUNCTION gp_mrc_norm_code(p text) RETURNS text LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    s text;
BEGIN
    IF p IS NULL OR length(p) > 64 THEN
        RETURN NULL;
    END IF;
    s := upper(p);
    IF s LIKE 'GPV1:%' THEN
        s := substr(s, 6);
    END IF;
    s := translate(regexp_replace(s, '[\s-]', '', 'g'), 'OIL', '011');
    IF s !~ '^[0-9A-HJKMNP-TV-Z]{12}$' THEN
        RETURN NULL;
    END IF;
    RETURN substr(s, 1, 4) || '-' || substr(s, 5, 4) || '-' || substr(s, 9, 4);
END
$$;

CREATE FUNCTION gp_merchant_json(m merchants) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('id', m.id, 'street_id', m.street_id, 'unit_id', m.unit_id,
        'name', m.name, 'address', m.address, 'contact_name', m.contact_name,
        'contact_phone', m.contact_phone, 'status', m.status, 'webhook_url', m.webhook_url,
        'created_at', m.created_at, 'updated_at', m.updated_at)
$$;

CREATE FUNCTION gp_merchant_key_json(k merchant_keys) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('key_id', k.key_id, 'merchant_id', k.merchant_id,
        'created_at', k.created_at, 'expires_at', k.expires_at, 'revoked_at', k.revoked_at,
        'status', CASE WHEN k.revoked_at IS NOT NULL THEN 'revoked'
                       WHEN k.expires_at <= now() THEN 'expired' ELSE 'active' END)
$$;

CREATE FUNCTION gp_offer_json(o offers) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('id', o.id, 'merchant_id', o.merchant_id, 'unit_id', o.unit_id,
        'title', o.title, 'description', o.description, 'price', o.price, 'stock', o.stock,
        'sold', o.sold, 'limit_per_day', o.limit_per_day, 'limit_per_month', o.limit_per_month,
        'starts_at', o.starts_at, 'ends_at', o.ends_at,
        'voucher_ttl_s', extract(epoch FROM o.voucher_ttl)::bigint, 'status', o.status,
        'version', o.version, 'created_at', o.created_at, 'updated_at', o.updated_at)
$$;

-- p_for: 'worker' (the holder: with the code and QR payload) or 'merchant' (masked name).
CREATE FUNCTION gp_voucher_json(v vouchers, p_for text) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('id', v.id, 'code', v.code, 'offer_id', v.offer_id,
        'offer_title', (SELECT title FROM offers WHERE id = v.offer_id),
        'merchant_id', v.merchant_id, 'price', v.price, 'state', v.state,
        'issued_at', v.issued_at, 'expires_at', v.expires_at, 'closed_at', v.closed_at,
        'refunded', v.refunded, 'hold_txn_id', v.hold_txn_id, 'close_txn_id', v.close_txn_id)
        || CASE WHEN p_for = 'worker'
                THEN jsonb_build_object('worker_id', v.worker_id, 'qr_payload', 'GPV1:' || v.code,
                         'merchant_name', (SELECT name FROM merchants WHERE id = v.merchant_id))
                ELSE jsonb_build_object('worker_name',
                         (SELECT gp_mrc_mask_name(name) FROM persons WHERE id = v.worker_id)) END
$$;

CREATE FUNCTION gp_charge_json(c charges, p_for text) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('id', c.id, 'merchant_id', c.merchant_id, 'amount', c.amount,
        'refunded', c.refunded, 'memo', c.memo, 'txn_id', c.txn_id, 'created_at', c.created_at,
        'refunds', (SELECT coalesce(jsonb_agg(jsonb_build_object('id', r.id, 'amount', r.amount,
                        'reason', r.reason, 'txn_id', r.txn_id, 'created_at', r.created_at)
                        ORDER BY r.id), '[]') FROM refunds r WHERE r.charge_id = c.id))
        || CASE WHEN p_for = 'worker'
                THEN jsonb_build_object('worker_id', c.worker_id,
                         'merchant_name', (SELECT name FROM merchants WHERE id = c.merchant_id))
                ELSE jsonb_build_object('worker_name',
                         (SELECT gp_mrc_mask_name(name) FROM persons WHERE id = c.worker_id)) END
$$;

CREATE FUNCTION gp_refund_json(r refunds) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('id', r.id, 'merchant_id', r.merchant_id,
        'charge_id', r.charge_id, 'voucher_id', r.voucher_id,
        'voucher_code', (SELECT code FROM vouchers WHERE id = r.voucher_id),
        'amount', r.amount, 'reason', r.reason, 'txn_id', r.txn_id, 'created_at', r.created_at)
$$;

CREATE FUNCTION gp_settlement_json(s settlements) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('id', s.id, 'merchant_id', s.merchant_id,
        'period_start', s.period_start, 'period_end', s.period_end,
        'totals', jsonb_build_object('captures', s.captures, 'capture_points', s.capture_points,
                                     'charges', s.charges, 'charge_points', s.charge_points,
                                     'refunds', s.refunds, 'refund_points', s.refund_points,
                                     'net', s.net),
        'txn_id', s.txn_id, 'closed_by', s.closed_by, 'closed_at', s.closed_at)
$$;

-- The merchant's ledger account (created at onboarding).
CREATE FUNCTION gp_mrc_account(p_merchant bigint) RETURNS bigint LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN (SELECT id FROM accounts WHERE kind = 'merchant' AND owner_id = p_merchant);
END
$$;

------------------------------------------------------------------------------------------
-- Who may do what
------------------------------------------------------------------------------------------
-- The merchant of a signed request (see the header): 401 for an unknown, revoked or expired
-- key, 403 for a suspended merchant.
CREATE FUNCTION gp_mrc_principal(p_key_id text) RETURNS merchants LANGUAGE plpgsql STABLE AS $$
DECLARE
    k merchant_keys;
    m merchants;
BEGIN
    SELECT * INTO k FROM merchant_keys WHERE key_id = p_key_id;
    IF NOT FOUND THEN
        PERFORM gp_raise('401', 'unknown_key', 'unknown merchant key', 'Authorization');
    END IF;
    IF k.revoked_at IS NOT NULL THEN
        PERFORM gp_raise('401', 'key_revoked', 'this merchant key has been revoked', 'Authorization');
    END IF;
    IF k.expires_at <= now() THEN
        PERFORM gp_raise('401', 'key_expired', 'this merchant key has expired', 'Authorization');
    END IF;
    SELECT * INTO m FROM merchants WHERE id = k.merchant_id;
    IF m.status <> 'active' THEN
        PERFORM gp_raise('403', 'merchant_suspended', 'this merchant is suspended');
    END IF;
    RETURN m;
END
$$;

-- For the server's signature check (no actor): the key's merchant and secret ciphertext, and
-- whether it may be used now; NULL for an unknown key.
CREATE FUNCTION gp_merchant_key_lookup(p_key_id text) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('key_id', k.key_id, 'merchant_id', k.merchant_id,
        'secret_ct', k.secret_ct,
        'status', CASE WHEN k.revoked_at IS NOT NULL THEN 'revoked'
                       WHEN k.expires_at <= now() THEN 'expired'
                       WHEN m.status <> 'active' THEN 'suspended' ELSE 'active' END,
        'ttl', CASE WHEN k.expires_at IS NULL THEN NULL
                    ELSE greatest(0, ceil(extract(epoch FROM k.expires_at - now())))::bigint END)
      FROM merchant_keys k JOIN merchants m ON m.id = k.merchant_id
     WHERE k.key_id = p_key_id
$$;

-- A merchant for a street admin (p_mode 'admin') or for a reader of its street -- staff
-- and auditors (p_mode 'read'); 404 merchant_not_found when the actor cannot see it, 403 when
-- they see it but may not change it.
CREATE FUNCTION gp_merchant_require(p_actor bigint, p_merchant bigint, p_mode text)
RETURNS merchants LANGUAGE plpgsql STABLE AS $$
DECLARE
    m merchants;
BEGIN
    SELECT * INTO m FROM merchants WHERE id = p_merchant;
    IF NOT FOUND OR NOT gp_has_role(p_actor, gp_reader_roles(), m.street_id) THEN
        PERFORM gp_raise('404', 'merchant_not_found', 'merchant not found', 'merchant_id');
    END IF;
    IF p_mode = 'admin' AND gp_admin_rank(p_actor, m.street_id) < 3 THEN
        PERFORM gp_raise('403', 'forbidden', 'only a street admin can manage merchants');
    END IF;
    RETURN m;
END
$$;

-- A merchant for one of its staff (the console routes); 404 for anyone else.
CREATE FUNCTION gp_merchant_for_staff(p_actor bigint, p_merchant bigint) RETURNS merchants
LANGUAGE plpgsql STABLE AS $$
DECLARE
    m merchants;
BEGIN
    SELECT m2.* INTO m FROM merchants m2
      JOIN merchant_staff s ON s.merchant_id = m2.id AND s.person_id = p_actor
      JOIN persons p ON p.id = p_actor AND p.status = 'active'
     WHERE m2.id = p_merchant;
    IF NOT FOUND THEN
        PERFORM gp_raise('404', 'merchant_not_found', 'merchant not found', 'merchant_id');
    END IF;
    RETURN m;
END
$$;

-- Refuses to move points in or out of a merchant account inside a settled period. Call it
-- after the merchant account is locked (see the header).
CREATE FUNCTION gp_mrc_check_period(p_merchant bigint) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM settlements WHERE merchant_id = p_merchant AND period_end > now()) THEN
        PERFORM gp_raise('409', 'period_settled',
            'the settlement period of this moment was just closed; retry', 'merchant_id');
    END IF;
END
$$;

-- Queues a webhook event for the merchant, when it has a webhook URL.
CREATE FUNCTION gp_mrc_event(p_merchant bigint, p_type text, p_data jsonb) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_id bigint;
BEGIN
    IF EXISTS (SELECT 1 FROM merchants WHERE id = p_merchant AND webhook_url IS NOT NULL) THEN
        v_id := nextval('merchant_events_id_seq');
        INSERT INTO merchant_events (id, event_id, merchant_id, type, payload)
        VALUES (v_id, 'evt_' || v_id || '_' || substr(md5(gen_random_uuid()::text), 1, 8),
                p_merchant, p_type, p_data);
    END IF;
END
$$;

-- Gives p_amount points of a spend back to the lots they were taken from. A spend
-- (gp_worker_spend_lots) consumed lots oldest-first, then points without a lot; giving back
-- walks that in reverse (points without a lot first, then the newest lot), starting after the
-- p_done points already given back by earlier refunds. p_txn is the transaction that just
-- credited the worker (gp_worker_add_lot checks it).
CREATE FUNCTION gp_mrc_restore_lots(p_worker bigint, p_txn bigint, p_spend jsonb, p_done bigint,
                                    p_amount bigint) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_pos bigint;
    v_from bigint := p_done;
    v_to bigint := p_done + p_amount;
    v_lo bigint;
    v_hi bigint;
    seg record;
    v_earned timestamptz;
BEGIN
    v_pos := (p_spend ->> 'amount')::bigint - (p_spend ->> 'from_lots')::bigint;
    FOR seg IN SELECT (e ->> 'lot_id')::bigint AS lot_id, (e ->> 'amount')::bigint AS amount
                 FROM jsonb_array_elements(p_spend -> 'lots') WITH ORDINALITY x (e, n)
                ORDER BY n DESC LOOP
        v_lo := greatest(v_pos, v_from);
        v_hi := least(v_pos + seg.amount, v_to);
        IF v_hi > v_lo THEN
            SELECT earned_at INTO v_earned FROM point_lots WHERE id = seg.lot_id;
            PERFORM gp_worker_add_lot(p_worker, p_txn, v_hi - v_lo, coalesce(v_earned, now()));
        END IF;
        v_pos := v_pos + seg.amount;
        EXIT WHEN v_pos >= v_to;
    END LOOP;
END
$$;

------------------------------------------------------------------------------------------
-- Onboarding and administration (street admins; reads also by staff and auditors)
------------------------------------------------------------------------------------------
CREATE FUNCTION gp_merchant_fields() RETURNS text[] LANGUAGE sql IMMUTABLE AS $$
    SELECT ARRAY['name', 'address', 'unit_id', 'contact_name', 'contact_phone']
$$;

-- p_args: {name, address, unit_id (the org subtree it serves; its street is the merchant's),
-- contact_name, contact_phone}. The actor is a street admin of that street. Creates the
-- merchant's ledger account. Idempotent on (principal, key).
CREATE FUNCTION gp_merchant_create(p_actor bigint, p_args jsonb, p_idem_principal text DEFAULT NULL,
                                   p_idem_key text DEFAULT NULL, p_request_hash text DEFAULT NULL)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_principal text := gp_idem_principal(p_idem_principal, p_actor);
    v_replay jsonb;
    a jsonb;
    u org_units;
    v_street bigint;
    m merchants;
    v_resp jsonb;
BEGIN
    v_replay := gp_idem_begin(v_principal, p_idem_key, p_request_hash);
    IF v_replay IS NOT NULL THEN
        RETURN v_replay;
    END IF;
    a := gp_targ_object(p_args, gp_merchant_fields());
    u := gp_require_unit(p_actor, gp_targ_int(a, 'unit_id', 1, 9223372036854775807, true),
                         gp_reader_roles());
    v_street := gp_street_of_unit(u.id);
    IF gp_admin_rank(p_actor, v_street) < 3 THEN
        PERFORM gp_raise('403', 'forbidden', 'only a street admin can onboard merchants', 'unit_id');
    END IF;
    BEGIN
        INSERT INTO merchants (street_id, unit_id, name, address, contact_name, contact_phone,
                               created_by)
        VALUES (v_street, u.id, gp_targ_text(a, 'name', 1, 100, true),
                gp_targ_text(a, 'address', 1, 300, true),
                gp_targ_text(a, 'contact_name', 1, 64, true),
                gp_targ_text(a, 'contact_phone', 5, 24, true), p_actor)
        RETURNING * INTO m;
    EXCEPTION
        WHEN unique_violation THEN
            PERFORM gp_raise('409', 'merchant_exists', 'a merchant with this name exists in this street', 'name');
        WHEN check_violation THEN
            PERFORM gp_raise('400', 'invalid_contact_phone', 'contact_phone is not a phone number', 'contact_phone');
    END;
    PERFORM gp_account_of('merchant', m.id, v_street);
    v_resp := gp_merchant_json(m) || jsonb_build_object('keys', '[]'::jsonb, 'balance', 0);
    PERFORM gp_audit(p_actor, 'merchant.create', 'merchant', m.id::text, v_street, NULL,
                     gp_merchant_json(m));
    RETURN gp_idem_finish(v_principal, p_idem_key, p_request_hash, v_resp);
END
$$;

CREATE FUNCTION gp_merchant_get(p_actor bigint, p_merchant bigint) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    m merchants := gp_merchant_require(p_actor, p_merchant, 'read');
BEGIN
    RETURN gp_merchant_json(m) || jsonb_build_object(
        'keys', (SELECT coalesce(jsonb_agg(gp_merchant_key_json(k) ORDER BY k.created_at, k.key_id), '[]')
                   FROM merchant_keys k WHERE k.merchant_id = m.id),
        'staff', (SELECT coalesce(jsonb_agg(jsonb_build_object('person_id', p.id, 'name', p.name,
                                                               'phone', p.phone) ORDER BY p.id), '[]')
                    FROM merchant_staff s JOIN persons p ON p.id = s.person_id
                   WHERE s.merchant_id = m.id),
        'balance', (SELECT balance FROM accounts WHERE id = gp_mrc_account(m.id)));
END
$$;

-- Merchants of the streets the actor can read; p_args {status?, unit_id?, cursor?, limit?}.
CREATE FUNCTION gp_merchant_list(p_actor bigint, p_args jsonb) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    a jsonb := gp_targ_object(p_args, ARRAY['status', 'unit_id', 'cursor', 'limit']);
    v_page record := gp_page_args(a);  -- lim, after
    v_status text := gp_targ_text(a, 'status', 1, 20);
    v_unit bigint := gp_targ_int(a, 'unit_id', 1, 9223372036854775807);
    u org_units;
    items jsonb;
BEGIN
    IF v_unit IS NOT NULL THEN
        u := gp_require_unit(p_actor, v_unit, gp_reader_roles());
    END IF;
    SELECT coalesce(jsonb_agg(gp_merchant_json(x) ORDER BY x.id), '[]') INTO items FROM (
        SELECT m.* FROM merchants m JOIN org_units mu ON mu.id = m.unit_id
         WHERE m.id > coalesce(v_page.after, 0)
           AND (v_status IS NULL OR m.status = v_status)
           AND (v_unit IS NULL OR mu.path <@ u.path OR u.path <@ mu.path)
           AND gp_has_role(p_actor, gp_reader_roles(), m.street_id)
         ORDER BY m.id LIMIT v_page.lim + 1) x;
    RETURN gp_page(items, v_page.lim);
END
$$;

-- p_args: any of gp_merchant_fields(); unit_id must stay inside the merchant's street.
CREATE FUNCTION gp_merchant_update(p_actor bigint, p_merchant bigint, p_args jsonb)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    before merchants;
    a jsonb;
    m merchants;
    v_unit bigint;
BEGIN
    before := gp_merchant_require(p_actor, p_merchant, 'admin');
    a := gp_targ_object(p_args, gp_merchant_fields());
    v_unit := gp_targ_int(a, 'unit_id', 1, 9223372036854775807);
    IF v_unit IS NOT NULL THEN
        PERFORM gp_require_unit(p_actor, v_unit, gp_reader_roles());
        IF gp_street_of_unit(v_unit) <> before.street_id THEN
            PERFORM gp_raise('400', 'unit_outside_street',
                             'a merchant serves units of its own street only', 'unit_id');
        END IF;
    END IF;
    BEGIN
        UPDATE merchants SET
            name = coalesce(gp_targ_text(a, 'name', 1, 100), name),
            address = coalesce(gp_targ_text(a, 'address', 1, 300), address),
            contact_name = coalesce(gp_targ_text(a, 'contact_name', 1, 64), contact_name),
            contact_phone = coalesce(gp_targ_text(a, 'contact_phone', 5, 24), contact_phone),
            unit_id = coalesce(v_unit, unit_id),
            updated_at = now()
         WHERE id = p_merchant RETURNING * INTO m;
    EXCEPTION
        WHEN unique_violation THEN
            PERFORM gp_raise('409', 'merchant_exists', 'a merchant with this name exists in this street', 'name');
        WHEN check_violation THEN
            PERFORM gp_raise('400', 'invalid_contact_phone', 'contact_phone is not a phone number', 'contact_phone');
    END;
    PERFORM gp_audit(p_actor, 'merchant.update', 'merchant', m.id::text, m.street_id,
                     gp_merchant_json(before), gp_merchant_json(m));
    RETURN gp_merchant_json(m);
END
$$;

-- Suspends ('suspended') or reinstates ('active') a merchant, with a reason. A suspended
-- merchant's keys answer 403 at once (gp_mrc_principal) and its offers leave the mall.
-- Returns the merchant; effects: its live keys leave the server's key cache ("forget_keys").
CREATE FUNCTION gp_merchant_set_status(p_actor bigint, p_merchant bigint, p_status text,
                                       p_reason text) RETURNS gp_reply LANGUAGE plpgsql AS $$
DECLARE
    before merchants;
    m merchants;
BEGIN
    before := gp_merchant_require(p_actor, p_merchant, 'admin');
    IF p_status NOT IN ('active', 'suspended') THEN
        PERFORM gp_raise('400', 'invalid_status', 'status is active or suspended', 'status');
    END IF;
    IF before.status = p_status THEN
        PERFORM gp_raise('409', CASE p_status WHEN 'active' THEN 'merchant_active'
                                              ELSE 'merchant_suspended' END,
                         format('the merchant is already %s', p_status), 'status');
    END IF;
    UPDATE merchants SET status = p_status, updated_at = now() WHERE id = p_merchant
    RETURNING * INTO m;
    PERFORM gp_audit(p_actor, CASE p_status WHEN 'active' THEN 'merchant.reinstate'
                                            ELSE 'merchant.suspend' END,
                     'merchant', m.id::text, m.street_id, gp_merchant_json(before),
                     gp_merchant_json(m), p_reason);
    RETURN gp_out(gp_merchant_json(m), jsonb_build_object('forget_keys',
        (SELECT coalesce(jsonb_agg(key_id ORDER BY key_id), '[]') FROM merchant_keys
          WHERE merchant_id = m.id AND revoked_at IS NULL)));
END
$$;

-- A new API key. p_secret_ct is the secret encrypted by the server (the plain secret never
-- reaches SQL; the server shows it once in its response). With p_rotate, every key of the
-- merchant that is still valid and has no end yet stops working after p_overlap (the overlap
-- period during which both old and new keys work). Returns the key and "expiring": the keys
-- given an end.
CREATE FUNCTION gp_merchant_key_create(p_actor bigint, p_merchant bigint, p_key_id text,
                                       p_secret_ct text, p_rotate boolean, p_overlap_s int)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    m merchants;
    k merchant_keys;
    v_expiring jsonb := '[]';
BEGIN
    m := gp_merchant_require(p_actor, p_merchant, 'admin');
    IF p_rotate THEN
        IF p_overlap_s IS NULL OR p_overlap_s < 0 OR p_overlap_s > 30 * 86400 THEN
            PERFORM gp_raise('400', 'invalid_overlap', 'overlap_s must be between 0 and 2592000',
                             'overlap_s');
        END IF;
        WITH x AS (
            UPDATE merchant_keys SET expires_at = now() + make_interval(secs => p_overlap_s)
             WHERE merchant_id = m.id AND revoked_at IS NULL AND expires_at IS NULL
            RETURNING *)
        SELECT coalesce(jsonb_agg(gp_merchant_key_json(x.*) ORDER BY x.key_id), '[]')
          INTO v_expiring FROM x;
    END IF;
    INSERT INTO merchant_keys (key_id, merchant_id, secret_ct, created_by)
    VALUES (p_key_id, m.id, p_secret_ct, p_actor) RETURNING * INTO k;
    PERFORM gp_audit(p_actor, CASE WHEN p_rotate THEN 'merchant.key_rotate' ELSE 'merchant.key_create' END,
                     'merchant', m.id::text, m.street_id, NULL,
                     jsonb_build_object('key_id', k.key_id, 'expiring', v_expiring));
    RETURN gp_merchant_key_json(k) || jsonb_build_object('expiring', v_expiring);
END
$$;

-- Revocation is effective at once: every /merchant/v1 statement re-checks the key.
CREATE FUNCTION gp_merchant_key_revoke(p_actor bigint, p_merchant bigint, p_key_id text)
RETURNS gp_reply LANGUAGE plpgsql AS $$
DECLARE
    m merchants;
    k merchant_keys;
BEGIN
    m := gp_merchant_require(p_actor, p_merchant, 'admin');
    UPDATE merchant_keys SET revoked_at = now(), revoked_by = p_actor
     WHERE key_id = p_key_id AND merchant_id = m.id AND revoked_at IS NULL
    RETURNING * INTO k;
    IF NOT FOUND THEN
        IF EXISTS (SELECT 1 FROM merchant_keys WHERE key_id = p_key_id AND merchant_id = m.id) THEN
            PERFORM gp_raise('409', 'key_revoked', 'this key is already revoked', 'key_id');
        END IF;
        PERFORM gp_raise('404', 'key_not_found', 'key not found', 'key_id');
    END IF;
    PERFORM gp_audit(p_actor, 'merchant.key_revoke', 'merchant', m.id::text, m.street_id, NULL,
                     jsonb_build_object('key_id', k.key_id));
    RETURN gp_out(gp_merchant_key_json(k), jsonb_build_object('forget_keys', jsonb_build_array(k.key_id)));
END
$$;

-- Links a person of the merchant's street as merchant staff (granting the merchant_staff role
-- on the street when they lack it); p_add false unlinks.
CREATE FUNCTION gp_merchant_staff(p_actor bigint, p_merchant bigint, p_person bigint,
                                  p_add boolean) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    m merchants;
    p persons;
BEGIN
    m := gp_merchant_require(p_actor, p_merchant, 'admin');
    SELECT * INTO p FROM persons WHERE id = p_person;
    IF NOT FOUND OR gp_street_of_unit(p.unit_id) <> m.street_id THEN
        PERFORM gp_raise('404', 'person_not_found', 'person not found', 'person_id');
    END IF;
    IF p_add THEN
        INSERT INTO role_grants (person_id, role, unit_id, granted_by)
        VALUES (p.id, 'merchant_staff', m.street_id, p_actor) ON CONFLICT DO NOTHING;
        INSERT INTO merchant_staff (merchant_id, person_id, created_by)
        VALUES (m.id, p.id, p_actor) ON CONFLICT DO NOTHING;
    ELSE
        DELETE FROM merchant_staff WHERE merchant_id = m.id AND person_id = p.id;
        IF NOT FOUND THEN
            PERFORM gp_raise('404', 'staff_not_found', 'this person is not staff of the merchant',
                             'person_id');
        END IF;
    END IF;
    PERFORM gp_audit(p_actor, CASE WHEN p_add THEN 'merchant.staff_add' ELSE 'merchant.staff_remove' END,
                     'merchant', m.id::text, m.street_id, NULL,
                     jsonb_build_object('person_id', p.id));
    RETURN gp_merchant_get(p_actor, m.id);
END
$$;

------------------------------------------------------------------------------------------
-- Offers (the merchant manages them; workers browse and order)
------------------------------------------------------------------------------------------
CREATE FUNCTION gp_offer_fields() RETURNS text[] LANGUAGE sql IMMUTABLE AS $$
    SELECT ARRAY['title', 'description', 'price', 'stock', 'limit_per_day', 'limit_per_month',
                 'starts_at', 'ends_at', 'unit_id', 'voucher_ttl_s', 'status']
$$;

-- Applies p_args over p_base (all of it for a new offer); checks the unit is inside the
-- merchant's served subtree. p_default_ttl_s: merchant.voucher_ttl of the server.
CREATE FUNCTION gp_offer_apply(m merchants, p_args jsonb, p_base offers, p_create boolean,
                               p_default_ttl_s int) RETURNS offers LANGUAGE plpgsql STABLE AS $$
DECLARE
    a jsonb := gp_targ_object(p_args, gp_offer_fields());
    o offers := p_base;
    v_unit bigint;
BEGIN
    o.merchant_id := m.id;
    o.title := coalesce(gp_targ_text(a, 'title', 1, 100, p_create), o.title);
    o.description := coalesce(gp_targ_text(a, 'description', 0, 1000), o.description, '');
    o.price := coalesce(gp_targ_int(a, 'price', 1, 1000000000, p_create), o.price);
    o.stock := coalesce(gp_targ_int(a, 'stock', 0, 1000000000, p_create), o.stock);
    IF a ? 'limit_per_day' THEN
        o.limit_per_day := gp_targ_int(a, 'limit_per_day', 1, 1000000);
    END IF;
    IF a ? 'limit_per_month' THEN
        o.limit_per_month := gp_targ_int(a, 'limit_per_month', 1, 1000000);
    END IF;
    o.starts_at := coalesce(gp_targ_ts(a, 'starts_at'), o.starts_at, now());
    o.ends_at := coalesce(gp_targ_ts(a, 'ends_at', p_create), o.ends_at);
    IF o.ends_at <= o.starts_at THEN
        PERFORM gp_raise('400', 'invalid_window', 'ends_at must be after starts_at', 'ends_at');
    END IF;
    IF a ? 'voucher_ttl_s' OR p_create THEN
        o.voucher_ttl := make_interval(secs => coalesce(
            gp_targ_int(a, 'voucher_ttl_s', 1, 90 * 86400), p_default_ttl_s));
    END IF;
    o.status := coalesce(gp_targ_text(a, 'status', 1, 20), o.status, 'active');
    IF o.status NOT IN ('active', 'paused') THEN
        PERFORM gp_raise('400', 'invalid_status', 'status is active or paused', 'status');
    END IF;
    v_unit := gp_targ_int(a, 'unit_id', 1, 9223372036854775807);
    o.unit_id := coalesce(v_unit, o.unit_id, m.unit_id);
    IF NOT EXISTS (SELECT 1 FROM org_units u JOIN org_units mu ON mu.id = m.unit_id
                    WHERE u.id = o.unit_id AND u.path <@ mu.path) THEN
        PERFORM gp_raise('400', 'unit_not_served',
                         'an offer is shown only inside the subtree the merchant serves', 'unit_id');
    END IF;
    IF o.limit_per_day IS NOT NULL AND o.limit_per_month IS NOT NULL
       AND o.limit_per_month < o.limit_per_day THEN
        PERFORM gp_raise('400', 'invalid_limits', 'limit_per_month is below limit_per_day',
                         'limit_per_month');
    END IF;
    RETURN o;
END
$$;

CREATE FUNCTION gp_mrc_offer_create(p_key_id text, p_args jsonb, p_default_ttl_s int,
                                    p_idem_principal text, p_idem_key text, p_request_hash text)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    m merchants := gp_mrc_principal(p_key_id);
    v_replay jsonb;
    o offers;
BEGIN
    v_replay := gp_idem_begin(p_idem_principal, p_idem_key, p_request_hash);
    IF v_replay IS NOT NULL THEN
        RETURN v_replay;
    END IF;
    o := gp_offer_apply(m, p_args, NULL, true, p_default_ttl_s);
    o.id := nextval('offers_id_seq');
    o.sold := 0;
    o.version := 1;
    o.created_at := now();
    o.updated_at := now();
    INSERT INTO offers SELECT o.*;
    RETURN gp_idem_finish(p_idem_principal, p_idem_key, p_request_hash,
                          gp_offer_json(o));
END
$$;

-- Edits an offer (price, stock = items left, limits, window, unit, status: active/paused).
-- Vouchers already issued keep their price.
CREATE FUNCTION gp_mrc_offer_update(p_key_id text, p_offer bigint, p_args jsonb,
                                    p_idem_principal text, p_idem_key text, p_request_hash text)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    m merchants := gp_mrc_principal(p_key_id);
    v_replay jsonb;
    o offers;
BEGIN
    v_replay := gp_idem_begin(p_idem_principal, p_idem_key, p_request_hash);
    IF v_replay IS NOT NULL THEN
        RETURN v_replay;
    END IF;
    SELECT * INTO o FROM offers WHERE id = p_offer AND merchant_id = m.id FOR UPDATE;
    IF NOT FOUND THEN
        PERFORM gp_raise('404', 'offer_not_found', 'offer not found', 'offer_id');
    END IF;
    o := gp_offer_apply(m, p_args, o, false, NULL);
    UPDATE offers SET title = o.title, description = o.description, price = o.price,
           stock = o.stock, limit_per_day = o.limit_per_day, limit_per_month = o.limit_per_month,
           starts_at = o.starts_at, ends_at = o.ends_at, voucher_ttl = o.voucher_ttl,
           status = o.status, unit_id = o.unit_id, version = version + 1, updated_at = now()
     WHERE id = p_offer RETURNING * INTO o;
    RETURN gp_idem_finish(p_idem_principal, p_idem_key, p_request_hash,
                          gp_offer_json(o));
END
$$;

-- A merchant's offers (internal: the caller resolved the merchant); p_args {status?, cursor?,
-- limit?}.
CREATE FUNCTION gp_m_offers(p_merchant bigint, p_args jsonb) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    a jsonb := gp_targ_object(p_args, ARRAY['status', 'cursor', 'limit']);
    v_page record := gp_page_args(a);  -- lim, after
    v_status text := gp_targ_text(a, 'status', 1, 20);
    items jsonb;
BEGIN
    SELECT coalesce(jsonb_agg(gp_offer_json(x) ORDER BY x.id), '[]') INTO items FROM (
        SELECT * FROM offers
         WHERE merchant_id = p_merchant AND id > coalesce(v_page.after, 0)
           AND (v_status IS NULL OR status = v_status)
         ORDER BY id LIMIT v_page.lim + 1) x;
    RETURN gp_page(items, v_page.lim);
END
$$;

CREATE FUNCTION gp_mrc_offer_get(p_key_id text, p_offer bigint) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    m merchants := gp_mrc_principal(p_key_id);
    o offers;
BEGIN
    SELECT * INTO o FROM offers WHERE id = p_offer AND merchant_id = m.id;
    IF NOT FOUND THEN
        PERFORM gp_raise('404', 'offer_not_found', 'offer not found', 'offer_id');
    END IF;
    RETURN gp_offer_json(o);
END
$$;

CREATE FUNCTION gp_mrc_me(p_key_id text) RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
DECLARE
    m merchants := gp_mrc_principal(p_key_id);
BEGIN
    RETURN gp_merchant_json(m) || jsonb_build_object('key_id', p_key_id,
        'balance', (SELECT balance FROM accounts WHERE id = gp_mrc_account(m.id)),
        'settled_until', (SELECT max(period_end) FROM settlements WHERE merchant_id = m.id));
END
$$;

------------------------------------------------------------------------------------------
-- The points mall (workers)
------------------------------------------------------------------------------------------
-- Can the actor see the offer in the mall: an active worker or volunteer whose home unit is in
-- the offer's subtree, the merchant active, the offer active and open now?
CREATE FUNCTION gp_mall_visible(p_actor bigint, o offers) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT gp_task_in_area(p_actor, o.unit_id) AND o.status = 'active'
       AND o.starts_at <= now() AND o.ends_at > now()
       AND EXISTS (SELECT 1 FROM merchants m WHERE m.id = o.merchant_id AND m.status = 'active')
$$;

-- What the worker may still order today and this month (NULL = no limit).
CREATE FUNCTION gp_mall_mine(p_actor bigint, o offers) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'ordered_today', count(*) FILTER (WHERE v.issued_at >= gp_mrc_day(now())),
        'ordered_this_month', count(*),
        'can_order_today', CASE WHEN o.limit_per_day IS NULL AND o.limit_per_month IS NULL THEN NULL
            ELSE least(coalesce(o.limit_per_day - count(*) FILTER (WHERE v.issued_at >= gp_mrc_day(now())), 1000000000),
                       coalesce(o.limit_per_month - count(*), 1000000000)) END)
      FROM vouchers v
     WHERE v.offer_id = o.id AND v.worker_id = p_actor AND v.state IN ('issued', 'captured')
       AND v.issued_at >= gp_mrc_month(now())
$$;

CREATE FUNCTION gp_mall_offer_json(p_actor bigint, o offers) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('id', o.id, 'merchant_id', o.merchant_id,
        'merchant_name', m.name, 'merchant_address', m.address, 'title', o.title,
        'description', o.description, 'price', o.price, 'stock', o.stock,
        'limit_per_day', o.limit_per_day, 'limit_per_month', o.limit_per_month,
        'ends_at', o.ends_at, 'voucher_ttl_s', extract(epoch FROM o.voucher_ttl)::bigint,
        'mine', gp_mall_mine(p_actor, o))
      FROM merchants m WHERE m.id = o.merchant_id
$$;

-- Offers visible to the worker, newest first by id; p_args {merchant_id?, in_stock?, cursor?,
-- limit?}.
CREATE FUNCTION gp_mall_offers(p_actor bigint, p_args jsonb) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    a jsonb := gp_targ_object(p_args, ARRAY['merchant_id', 'in_stock', 'cursor', 'limit']);
    v_page record := gp_page_args(a);  -- lim, after
    v_merchant bigint := gp_targ_int(a, 'merchant_id', 1, 9223372036854775807);
    v_in_stock boolean := coalesce(gp_targ_bool(a, 'in_stock'), false);
    items jsonb;
BEGIN
    IF NOT gp_task_is_worker(p_actor) THEN
        PERFORM gp_raise('403', 'not_a_worker', 'the points mall is for workers and volunteers');
    END IF;
    SELECT coalesce(jsonb_agg(gp_mall_offer_json(p_actor, x) ORDER BY x.id DESC), '[]')
      INTO items FROM (
        SELECT o.* FROM offers o
          JOIN org_units ou ON ou.id = o.unit_id
          JOIN persons p ON p.id = p_actor
          JOIN org_units pu ON pu.id = p.unit_id
          JOIN merchants m ON m.id = o.merchant_id AND m.status = 'active'
         WHERE o.status = 'active' AND o.starts_at <= now() AND o.ends_at > now()
           AND pu.path <@ ou.path
           AND (v_page.after IS NULL OR o.id < v_page.after)
           AND (v_merchant IS NULL OR o.merchant_id = v_merchant)
           AND (NOT v_in_stock OR o.stock > 0)
         ORDER BY o.id DESC LIMIT v_page.lim + 1) x;
    RETURN gp_page(items, v_page.lim);
END
$$;

CREATE FUNCTION gp_mall_offer_get(p_actor bigint, p_offer bigint) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    o offers;
BEGIN
    SELECT * INTO o FROM offers WHERE id = p_offer;
    IF NOT FOUND OR NOT gp_mall_visible(p_actor, o) THEN
        PERFORM gp_raise('404', 'offer_not_found', 'offer not found', 'offer_id');
    END IF;
    RETURN gp_mall_offer_json(p_actor, o);
END
$$;

-- A worker orders an offer: one item of stock is taken, the price is held (worker ->
-- hold(voucher)) and a one-time voucher code is issued, valid for the offer's voucher_ttl.
-- Stock and per-person limits are exact under concurrency: every order of an offer updates
-- the offer row first (a conditional UPDATE decides who gets the last items), and counts the
-- worker's vouchers only after it holds that row's lock, so orders of one offer are serialized
-- from that point on. Errors: 404 offer_not_found, 403 not_a_worker, 409 out_of_stock, 409
-- limit_reached, 409 insufficient_points. Idempotent on (principal, key).
CREATE FUNCTION gp_mall_order(p_actor bigint, p_offer bigint, p_idem_principal text DEFAULT NULL,
                              p_idem_key text DEFAULT NULL, p_request_hash text DEFAULT NULL)
RETURNS gp_reply LANGUAGE plpgsql AS $$
DECLARE
    v_principal text := gp_idem_principal(p_idem_principal, p_actor);
    v_replay jsonb;
    o offers;
    m merchants;
    v vouchers;
    v_day int;
    v_month int;
    v_hold bigint;
    v_txn bigint;
    v_spend jsonb;
    v_code text;
    v_resp jsonb;
    v_state jsonb;
    r record;
    i int;
BEGIN
    v_replay := gp_idem_begin(v_principal, p_idem_key, p_request_hash);
    IF v_replay IS NOT NULL THEN
        RETURN gp_out(v_replay);
    END IF;
    SELECT * INTO o FROM offers WHERE id = p_offer;
    IF NOT FOUND OR NOT gp_mall_visible(p_actor, o) THEN
        IF NOT gp_task_is_worker(p_actor) THEN
            PERFORM gp_raise('403', 'not_a_worker', 'the points mall is for workers and volunteers');
        END IF;
        PERFORM gp_raise('404', 'offer_not_found', 'offer not found', 'offer_id');
    END IF;
    -- The race is decided here.
    UPDATE offers SET stock = stock - 1, sold = sold + 1, version = version + 1
     WHERE id = p_offer AND stock > 0 AND status = 'active'
       AND starts_at <= now() AND ends_at > now()
    RETURNING * INTO o;
    IF NOT FOUND THEN
        PERFORM gp_raise('409', 'out_of_stock', 'this offer is sold out', 'offer_id');
    END IF;
    IF o.limit_per_day IS NOT NULL OR o.limit_per_month IS NOT NULL THEN
        SELECT count(*) FILTER (WHERE issued_at >= gp_mrc_day(now())), count(*)
          INTO v_day, v_month
          FROM vouchers
         WHERE offer_id = o.id AND worker_id = p_actor AND state IN ('issued', 'captured')
           AND issued_at >= gp_mrc_month(now());
        IF v_day >= coalesce(o.limit_per_day, 2147483647) THEN
            PERFORM gp_raise('409', 'limit_reached',
                format('you can order this offer %s times a day', o.limit_per_day), 'offer_id');
        END IF;
        IF v_month >= coalesce(o.limit_per_month, 2147483647) THEN
            PERFORM gp_raise('409', 'limit_reached',
                format('you can order this offer %s times a month', o.limit_per_month), 'offer_id');
        END IF;
    END IF;
    SELECT * INTO m FROM merchants WHERE id = o.merchant_id;
    v.id := nextval('vouchers_id_seq');
    v_hold := gp_account_of('hold', v.id, m.street_id);
    r := gp_ledger_post_core('hold', p_actor,
        jsonb_build_object('voucher_id', v.id, 'offer_id', o.id, 'merchant_id', m.id,
                           'worker_id', p_actor), NULL,
        ARRAY[gp_account_of('worker', p_actor), v_hold], ARRAY[-o.price, o.price], NULL, NULL);
    v_txn := r.txn_id;
    v_spend := gp_lots_spend(p_actor, o.price); -- the posting locked the worker's accounts
    v_state := gp_posted_worker_state(p_actor, r.kinds, r.owners, r.balances, r.versions);
    FOR i IN 1 .. 5 LOOP
        v_code := gp_mrc_new_code();
        EXIT WHEN NOT EXISTS (SELECT 1 FROM vouchers WHERE code = v_code);
    END LOOP;
    INSERT INTO vouchers (id, code, offer_id, merchant_id, worker_id, price, hold_txn_id, spend,
                          expires_at)
    VALUES (v.id, v_code, o.id, m.id, p_actor, o.price, v_txn, v_spend, now() + o.voucher_ttl)
    RETURNING * INTO v;
    PERFORM gp_outbox('voucher.issued', p_actor,
        jsonb_build_object('voucher_id', v.id, 'offer_id', o.id, 'price', v.price,
                           'expires_at', v.expires_at));
    v_resp := gp_voucher_json(v, 'worker')
        || jsonb_build_object('receipt', jsonb_build_object('txn_id', v_txn),
                              'balances', jsonb_build_array(v_state));
    RETURN gp_out(gp_idem_finish(v_principal, p_idem_key, p_request_hash, v_resp),
                  jsonb_build_object('balances', jsonb_build_array(v_state)));
END
$$;

-- Returns a voucher's held points to the worker (kind 'void'), back into the lots they came
-- from, and its item to the offer's stock. The caller holds the voucher row lock and sets the
-- state. Returns the void transaction id.
CREATE FUNCTION gp_mrc_void(v vouchers, p_actor bigint, p_why text) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_txn bigint;
BEGIN
    UPDATE offers SET stock = stock + 1, sold = sold - 1, version = version + 1
     WHERE id = v.offer_id;
    v_txn := gp_ledger_post_legs('void', p_actor,
        jsonb_build_object('voucher_id', v.id, 'worker_id', v.worker_id, 'reason', p_why), NULL,
        ARRAY[gp_account_of('hold', v.id), gp_account_of('worker', v.worker_id)],
        ARRAY[-v.price, v.price]);
    PERFORM gp_mrc_restore_lots(v.worker_id, v_txn, v.spend, 0, v.price);
    RETURN v_txn;
END
$$;

CREATE FUNCTION gp_voucher_cancel(p_actor bigint, p_voucher bigint) RETURNS gp_reply
LANGUAGE plpgsql AS $$
DECLARE
    v vouchers;
    v_txn bigint;
BEGIN
    SELECT * INTO v FROM vouchers WHERE id = p_voucher AND worker_id = p_actor FOR UPDATE;
    IF NOT FOUND THEN
        PERFORM gp_raise('404', 'voucher_not_found', 'voucher not found', 'voucher_id');
    END IF;
    IF v.state <> 'issued' THEN
        PERFORM gp_raise('409', 'voucher_' || v.state, format('the voucher is %s', v.state),
                         'voucher_id');
    END IF;
    v_txn := gp_mrc_void(v, p_actor, 'cancelled');
    UPDATE vouchers SET state = 'cancelled', close_txn_id = v_txn, closed_at = now()
     WHERE id = v.id RETURNING * INTO v;
    PERFORM gp_outbox('voucher.cancelled', p_actor,
        jsonb_build_object('voucher_id', v.id, 'txn_id', v_txn));
    RETURN gp_out(gp_voucher_json(v, 'worker')
        || jsonb_build_object('receipt', jsonb_build_object('txn_id', v_txn),
                              'balances', jsonb_build_array(gp_worker_state(p_actor))),
        gp_fx_balances(ARRAY[p_actor]));
END
$$;

CREATE FUNCTION gp_voucher_get(p_actor bigint, p_voucher bigint) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v vouchers;
BEGIN
    SELECT * INTO v FROM vouchers WHERE id = p_voucher AND worker_id = p_actor;
    IF NOT FOUND THEN
        PERFORM gp_raise('404', 'voucher_not_found', 'voucher not found', 'voucher_id');
    END IF;
    RETURN gp_voucher_json(v, 'worker');
END
$$;

-- The actor's vouchers, newest first; p_args {state?, cursor?, limit?}.
CREATE FUNCTION gp_vouchers_mine(p_actor bigint, p_args jsonb) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    a jsonb := gp_targ_object(p_args, ARRAY['state', 'cursor', 'limit']);
    v_page record := gp_page_args(a);  -- lim, after
    v_state text := gp_targ_text(a, 'state', 1, 20);
    items jsonb;
BEGIN
    SELECT coalesce(jsonb_agg(gp_voucher_json(x, 'worker') ORDER BY x.id DESC), '[]') INTO items
      FROM (SELECT * FROM vouchers
             WHERE worker_id = p_actor AND (v_page.after IS NULL OR id < v_page.after)
               AND (v_state IS NULL OR state = v_state)
             ORDER BY id DESC LIMIT v_page.lim + 1) x;
    RETURN gp_page(items, v_page.lim);
END
$$;

------------------------------------------------------------------------------------------
-- Vouchers at the counter (merchants)
------------------------------------------------------------------------------------------
-- A voucher of the merchant by code; 404 voucher_not_found for any other merchant's voucher
-- (no existence oracle) and for what is not a code. p_lock: FOR UPDATE.
CREATE FUNCTION gp_mrc_voucher_find(m merchants, p_code text, p_lock boolean) RETURNS vouchers
LANGUAGE plpgsql AS $$
DECLARE
    v vouchers;
    v_code text := gp_mrc_norm_code(p_code);
BEGIN
    IF p_lock THEN
        SELECT * INTO v FROM vouchers WHERE code = v_code AND merchant_id = m.id FOR UPDATE;
    ELSE
        SELECT * INTO v FROM vouchers WHERE code = v_code AND merchant_id = m.id;
    END IF;
    IF NOT FOUND THEN
        PERFORM gp_raise('404', 'voucher_not_found', 'voucher not found', 'code');
    END IF;
    RETURN v;
END
$$;

CREATE FUNCTION gp_mrc_voucher_get(p_key_id text, p_code text) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v vouchers := gp_mrc_voucher_find(gp_mrc_principal(p_key_id), p_code, false);
BEGIN
    RETURN gp_voucher_json(v, 'merchant') || jsonb_build_object('capturable',
        v.state = 'issued' AND v.expires_at > now());
END
$$;

-- Captures a voucher at the counter: hold(voucher) -> merchant (kind 'capture'). Only the
-- merchant of the offer (else 404); a second capture is refused (409 voucher_captured), as is
-- a cancelled (409 voucher_cancelled) or expired one (409 voucher_expired, also when its timer
-- has not run yet). Idempotent on (merchant principal, key).
CREATE FUNCTION gp_mrc_voucher_capture(p_key_id text, p_code text, p_idem_principal text,
                                       p_idem_key text, p_request_hash text)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    m merchants := gp_mrc_principal(p_key_id);
    v_replay jsonb;
    v vouchers;
    v_hold bigint;
    v_acc bigint;
    v_txn bigint;
    v_resp jsonb;
BEGIN
    v_replay := gp_idem_begin(p_idem_principal, p_idem_key, p_request_hash);
    IF v_replay IS NOT NULL THEN
        RETURN v_replay;
    END IF;
    v := gp_mrc_voucher_find(m, p_code, true);
    IF v.state <> 'issued' THEN
        PERFORM gp_raise('409', 'voucher_' || v.state, format('the voucher is %s', v.state), 'code');
    END IF;
    IF v.expires_at <= now() THEN
        PERFORM gp_raise('409', 'voucher_expired', 'the voucher is expired', 'code');
    END IF;
    SELECT (SELECT id FROM accounts WHERE kind = 'hold' AND owner_id = v.id),
           (SELECT id FROM accounts WHERE kind = 'merchant' AND owner_id = m.id)
      INTO v_hold, v_acc;
    -- The posting locks both accounts in id order; the settled period is checked under that
    -- lock (see the header).
    v_txn := gp_ledger_post_legs('capture', NULL,
        jsonb_build_object('voucher_id', v.id, 'merchant_id', m.id, 'worker_id', v.worker_id,
                           'offer_id', v.offer_id, 'key_id', p_key_id), NULL,
        ARRAY[v_hold, v_acc], ARRAY[-v.price, v.price], p_idem_principal, p_idem_key);
    PERFORM gp_mrc_check_period(m.id);
    UPDATE vouchers SET state = 'captured', close_txn_id = v_txn, closed_at = now()
     WHERE id = v.id RETURNING * INTO v;
    v_resp := gp_voucher_json(v, 'merchant');
    IF m.webhook_url IS NOT NULL THEN
        PERFORM gp_mrc_event(m.id, 'voucher.captured', v_resp);
    END IF;
    PERFORM gp_outbox('voucher.captured', v.worker_id,
        jsonb_build_object('voucher_id', v.id, 'txn_id', v_txn, 'merchant_id', m.id));
    v_resp := v_resp || jsonb_build_object('receipt', jsonb_build_object('txn_id', v_txn));
    RETURN gp_idem_finish(p_idem_principal, p_idem_key, p_request_hash, v_resp);
END
$$;

------------------------------------------------------------------------------------------
-- Pay codes and counter charges
------------------------------------------------------------------------------------------
-- A new pay code for the actor (a worker or volunteer): the row that makes the signed token
-- single-use. p_nonce: 32 random hex digits from the server, which signs the token with
-- {nonce, worker_id, exp} after this returns.
CREATE FUNCTION gp_paycode_issue(p_actor bigint, p_nonce text, p_ttl_s int) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    pc paycodes;
BEGIN
    IF NOT gp_task_is_worker(p_actor) THEN
        PERFORM gp_raise('403', 'not_a_worker', 'pay codes are for workers and volunteers');
    END IF;
    INSERT INTO paycodes (nonce, worker_id, expires_at, street_id)
    SELECT p_nonce, p_actor, now() + make_interval(secs => p_ttl_s), p.street_id
      FROM persons p WHERE p.id = p_actor
    RETURNING * INTO pc;
    RETURN jsonb_build_object('nonce', pc.nonce, 'worker_id', pc.worker_id,
        'expires_at', pc.expires_at, 'exp', floor(extract(epoch FROM pc.expires_at))::bigint);
END
$$;

-- Charges p_amount points with a pay code whose signature the server has checked (worker ->
-- merchant, kind 'charge'). The pay code must belong to p_worker and the worker must live in
-- the area the merchant serves (else 404 paycode_not_found, like a pay code that does not
-- exist: a merchant learns nothing about the codes of workers it does not serve), and it must
-- be unused and unexpired by the database clock (409 paycode_used / paycode_expired).
-- Idempotent on (merchant principal, key): the same key with another amount is 422.
CREATE FUNCTION gp_mrc_charge(p_key_id text, p_nonce text, p_worker bigint,
                              p_amount bigint, p_memo text, p_idem_principal text,
                              p_idem_key text, p_request_hash text)
RETURNS gp_reply LANGUAGE plpgsql AS $$
DECLARE
    m merchants := gp_mrc_principal(p_key_id);
    v_replay jsonb;
    v_pc_worker bigint;
    v_used timestamptz;
    v_expires timestamptz;
    v_in_area boolean;
    c charges;
    v_wacc bigint;
    v_acc bigint;
    r record;
    v_spend jsonb;
    v_json jsonb;
BEGIN
    v_replay := gp_idem_begin(p_idem_principal, p_idem_key, p_request_hash);
    IF v_replay IS NOT NULL THEN
        RETURN gp_out(v_replay - 'balances'); -- stored before 'balances' left the body
    END IF;
    IF p_amount IS NULL OR p_amount < 1 OR p_amount > 1000000000 THEN
        PERFORM gp_raise('400', 'invalid_amount', 'amount must be between 1 and 1000000000', 'amount');
    END IF;
    -- One statement: the pay code (locked: the domain row comes before the accounts in the
    -- lock order), whether its worker lives where the merchant serves, the two accounts.
    SELECT pc.worker_id, pc.used_at, pc.expires_at,
           EXISTS (SELECT 1 FROM persons p JOIN org_units pu ON pu.id = p.unit_id
                     JOIN org_units mu ON mu.id = m.unit_id
                    WHERE p.id = p_worker AND p.status = 'active' AND pu.path <@ mu.path),
           (SELECT id FROM accounts WHERE kind = 'worker' AND owner_id = p_worker),
           (SELECT id FROM accounts WHERE kind = 'merchant' AND owner_id = m.id)
      INTO v_pc_worker, v_used, v_expires, v_in_area, v_wacc, v_acc
      FROM paycodes pc WHERE pc.nonce = p_nonce FOR UPDATE OF pc;
    IF NOT FOUND OR v_pc_worker <> p_worker OR NOT v_in_area THEN
        PERFORM gp_raise('404', 'paycode_not_found', 'pay code not found', 'paycode');
    END IF;
    IF v_used IS NOT NULL THEN
        PERFORM gp_raise('409', 'paycode_used', 'this pay code has been used', 'paycode');
    END IF;
    IF v_expires <= now() THEN
        PERFORM gp_raise('409', 'paycode_expired', 'this pay code has expired', 'paycode');
    END IF;
    IF v_wacc IS NULL THEN -- a worker who never had points: the posting answers 402
        v_wacc := gp_account_of('worker', p_worker);
    END IF;
    c.id := nextval('charges_id_seq');
    -- The posting locks both accounts (and the worker's pending one) in id order; the settled
    -- period is checked under that lock (see the header), the lots after it.
    r := gp_ledger_post_core('charge', NULL,
        jsonb_build_object('charge_id', c.id, 'merchant_id', m.id, 'worker_id', p_worker,
                           'key_id', p_key_id), p_memo,
        ARRAY[v_wacc, v_acc], ARRAY[-p_amount, p_amount], p_idem_principal, p_idem_key);
    PERFORM gp_mrc_check_period(m.id);
    v_spend := gp_lots_spend(p_worker, p_amount);
    INSERT INTO charges (id, merchant_id, worker_id, amount, paycode, memo, txn_id, spend, street_id)
    VALUES (c.id, m.id, p_worker, p_amount, p_nonce, p_memo, r.txn_id, v_spend, m.street_id)
    RETURNING * INTO c;
    UPDATE paycodes SET used_at = now(), charge_id = c.id WHERE nonce = p_nonce;
    v_json := gp_charge_json(c, 'merchant');
    IF m.webhook_url IS NOT NULL THEN
        PERFORM gp_mrc_event(m.id, 'charge.created', v_json);
    END IF;
    PERFORM gp_outbox('charge.created', p_worker,
        jsonb_build_object('charge_id', c.id, 'txn_id', r.txn_id, 'amount', p_amount,
                           'merchant_id', m.id));
    -- A merchant never sees a worker's balance: it goes to the cache, not into the body.
    RETURN gp_out(gp_idem_finish(p_idem_principal, p_idem_key, p_request_hash,
                                 v_json || jsonb_build_object('receipt',
                                               jsonb_build_object('txn_id', r.txn_id))),
                  jsonb_build_object('balances', jsonb_build_array(gp_posted_worker_state(
                      p_worker, r.kinds, r.owners, r.balances, r.versions))));
END
$$;

CREATE FUNCTION gp_mrc_charge_get(p_key_id text, p_charge bigint) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    m merchants := gp_mrc_principal(p_key_id);
    c charges;
BEGIN
    SELECT * INTO c FROM charges WHERE id = p_charge AND merchant_id = m.id;
    IF NOT FOUND THEN
        PERFORM gp_raise('404', 'charge_not_found', 'charge not found', 'charge_id');
    END IF;
    RETURN gp_charge_json(c, 'merchant');
END
$$;

-- The actor's charges (the worker sees a charge as soon as it committed), newest first.
CREATE FUNCTION gp_charges_mine(p_actor bigint, p_args jsonb) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    a jsonb := gp_targ_object(p_args, ARRAY['cursor', 'limit']);
    v_page record := gp_page_args(a);  -- lim, after
    items jsonb;
BEGIN
    SELECT coalesce(jsonb_agg(gp_charge_json(x, 'worker') ORDER BY x.id DESC), '[]') INTO items
      FROM (SELECT * FROM charges
             WHERE worker_id = p_actor AND (v_page.after IS NULL OR id < v_page.after)
             ORDER BY id DESC LIMIT v_page.lim + 1) x;
    RETURN gp_page(items, v_page.lim);
END
$$;

------------------------------------------------------------------------------------------
-- Refunds
------------------------------------------------------------------------------------------
-- Refunds all that is left (p_amount NULL) or part of a charge (p_kind 'charge', p_ref its
-- id) or of a captured voucher (p_kind 'voucher', p_ref its code): merchant -> worker (kind
-- 'refund'), a new ledger transaction each time. Within p_window of the charge or capture
-- (409 refund_window_closed); never more than the original in total (409
-- refund_exceeds_original): the charge/voucher row is locked first, so concurrent refunds are
-- serialized and each sees what the others refunded. Paid from the merchant's unsettled
-- balance (409 insufficient_points when it cannot cover it). Idempotent on (principal, key).
CREATE FUNCTION gp_mrc_refund(p_key_id text, p_kind text, p_ref text, p_args jsonb,
                              p_window_s int, p_idem_principal text, p_idem_key text,
                              p_request_hash text)
RETURNS gp_reply LANGUAGE plpgsql AS $$
DECLARE
    m merchants := gp_mrc_principal(p_key_id);
    v_replay jsonb;
    a jsonb;
    c charges;
    v vouchers;
    v_worker bigint;
    v_total bigint;
    v_done bigint;
    v_at timestamptz;
    v_spend jsonb;
    v_amount bigint;
    v_reason text;
    v_wacc bigint;
    v_acc bigint;
    v_txn bigint;
    r refunds;
    p record;
    v_resp jsonb;
BEGIN
    v_replay := gp_idem_begin(p_idem_principal, p_idem_key, p_request_hash);
    IF v_replay IS NOT NULL THEN
        RETURN gp_out(v_replay - 'balances'); -- stored before 'balances' left the body
    END IF;
    a := gp_targ_object(p_args, ARRAY['amount', 'reason']);
    v_amount := gp_targ_int(a, 'amount', 1, 1000000000);
    v_reason := gp_targ_text(a, 'reason', 0, 200);
    IF p_kind = 'charge' THEN
        SELECT * INTO c FROM charges
         WHERE id = CASE WHEN p_ref ~ '^[0-9]{1,18}$' THEN p_ref::bigint END AND merchant_id = m.id
           FOR UPDATE;
        IF NOT FOUND THEN
            PERFORM gp_raise('404', 'charge_not_found', 'charge not found', 'charge_id');
        END IF;
        v_worker := c.worker_id; v_total := c.amount; v_done := c.refunded;
        v_at := c.created_at; v_spend := c.spend;
    ELSIF p_kind = 'voucher' THEN
        v := gp_mrc_voucher_find(m, p_ref, true);
        IF v.state <> 'captured' THEN
            PERFORM gp_raise('409', 'voucher_not_captured', 'only a captured voucher can be refunded',
                             'code');
        END IF;
        v_worker := v.worker_id; v_total := v.price; v_done := v.refunded;
        v_at := v.closed_at; v_spend := v.spend;
    ELSE
        PERFORM gp_raise('400', 'invalid_kind', 'refunds are of charges or vouchers');
    END IF;
    IF now() > v_at + make_interval(secs => p_window_s) THEN
        PERFORM gp_raise('409', 'refund_window_closed', 'the refund window has closed');
    END IF;
    IF v_done >= v_total THEN
        PERFORM gp_raise('409', 'fully_refunded', 'this has been refunded in full');
    END IF;
    v_amount := coalesce(v_amount, v_total - v_done);
    IF v_amount > v_total - v_done THEN
        PERFORM gp_raise('409', 'refund_exceeds_original',
            format('at most %s points are left to refund', v_total - v_done), 'amount');
    END IF;
    SELECT (SELECT id FROM accounts WHERE kind = 'worker' AND owner_id = v_worker),
           (SELECT id FROM accounts WHERE kind = 'merchant' AND owner_id = m.id)
      INTO v_wacc, v_acc;
    r.id := nextval('refunds_id_seq');
    -- The posting locks both accounts (and the worker's pending one) in id order; the settled
    -- period is checked under that lock (see the header).
    p := gp_ledger_post_core('refund', NULL,
        jsonb_build_object('refund_id', r.id, 'merchant_id', m.id, 'worker_id', v_worker,
                           'charge_id', c.id, 'voucher_id', v.id, 'key_id', p_key_id), v_reason,
        ARRAY[v_acc, v_wacc], ARRAY[-v_amount, v_amount], p_idem_principal, p_idem_key);
    v_txn := p.txn_id;
    PERFORM gp_mrc_check_period(m.id);
    PERFORM gp_mrc_restore_lots(v_worker, v_txn, v_spend, v_done, v_amount);
    INSERT INTO refunds (id, merchant_id, worker_id, charge_id, voucher_id, amount, reason, txn_id,
                         street_id)
    VALUES (r.id, m.id, v_worker, c.id, v.id, v_amount, v_reason, v_txn, m.street_id)
    RETURNING * INTO r;
    IF p_kind = 'charge' THEN
        UPDATE charges SET refunded = refunded + v_amount WHERE id = c.id;
    ELSE
        UPDATE vouchers SET refunded = refunded + v_amount WHERE id = v.id;
    END IF;
    v_resp := gp_refund_json(r);
    IF m.webhook_url IS NOT NULL THEN
        PERFORM gp_mrc_event(m.id, 'refund.created', v_resp);
    END IF;
    PERFORM gp_outbox('refund.created', v_worker,
        jsonb_build_object('refund_id', r.id, 'txn_id', v_txn, 'amount', v_amount,
                           'merchant_id', m.id));
    v_resp := v_resp || jsonb_build_object(
        'refunded_total', v_done + v_amount, 'original', v_total,
        'receipt', jsonb_build_object('txn_id', v_txn));
    -- A merchant never sees a worker's balance: it goes to the cache, not into the body.
    RETURN gp_out(gp_idem_finish(p_idem_principal, p_idem_key, p_request_hash, v_resp),
                  jsonb_build_object('balances', jsonb_build_array(gp_posted_worker_state(
                      v_worker, p.kinds, p.owners, p.balances, p.versions))));
END
$$;

------------------------------------------------------------------------------------------
-- Statements and settlement
------------------------------------------------------------------------------------------
-- The merchant account's capture, charge and refund postings in [p_from, p_to), with totals
-- (from the ledger itself): {"merchant_id", "from", "to", "totals": {captures,
-- capture_points, charges, charge_points, refunds, refund_points, net}, "items": [{"id" (txn),
-- "kind", "points" (signed, the merchant's side), "created_at", "voucher_code", "charge_id",
-- "refund_id"}], "next_cursor"}.
CREATE FUNCTION gp_m_statement(p_merchant bigint, p_from timestamptz, p_to timestamptz,
                               p_after bigint, p_limit int) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_acc bigint := gp_mrc_account(p_merchant);
    v_limit int := least(greatest(coalesce(p_limit, 50), 1), 500);
    v_from timestamptz := coalesce(p_from, '-infinity');
    v_to timestamptz := coalesce(p_to, 'infinity');
    totals jsonb;
    items jsonb;
BEGIN
    IF v_from >= v_to THEN
        PERFORM gp_raise('400', 'invalid_window', 'from must be before to', 'from');
    END IF;
    SELECT jsonb_build_object(
             'captures', count(*) FILTER (WHERE t.kind = 'capture'),
             'capture_points', coalesce(sum(p.amount) FILTER (WHERE t.kind = 'capture'), 0),
             'charges', count(*) FILTER (WHERE t.kind = 'charge'),
             'charge_points', coalesce(sum(p.amount) FILTER (WHERE t.kind = 'charge'), 0),
             'refunds', count(*) FILTER (WHERE t.kind = 'refund'),
             'refund_points', -coalesce(sum(p.amount) FILTER (WHERE t.kind = 'refund'), 0),
             'net', coalesce(sum(p.amount), 0))
      INTO totals
      FROM postings p JOIN ledger_txns t ON t.id = p.txn_id
     WHERE p.account_id = v_acc AND t.kind IN ('capture', 'charge', 'refund')
       AND t.created_at >= v_from AND t.created_at < v_to;
    SELECT coalesce(jsonb_agg(x.j ORDER BY x.id), '[]') INTO items FROM (
        SELECT t.id, jsonb_build_object('id', t.id, 'kind', t.kind, 'points', p.amount,
                   'created_at', t.created_at,
                   'voucher_code', (SELECT code FROM vouchers
                                     WHERE id = (t.refs ->> 'voucher_id')::bigint),
                   'charge_id', (t.refs ->> 'charge_id')::bigint,
                   'refund_id', (t.refs ->> 'refund_id')::bigint) AS j
          FROM postings p JOIN ledger_txns t ON t.id = p.txn_id
         WHERE p.account_id = v_acc AND t.kind IN ('capture', 'charge', 'refund')
           AND t.created_at >= v_from AND t.created_at < v_to
           AND t.id > coalesce(p_after, 0)
         ORDER BY t.id LIMIT v_limit + 1) x;
    RETURN gp_page(items, v_limit) || jsonb_build_object('merchant_id', p_merchant,
        'from', p_from, 'to', p_to, 'totals', totals);
END
$$;

-- The same as CSV text (every line, then one "total" row per kind and the net).
CREATE FUNCTION gp_m_statement_csv(p_merchant bigint, p_from timestamptz, p_to timestamptz)
RETURNS text LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_acc bigint := gp_mrc_account(p_merchant);
    v_from timestamptz := coalesce(p_from, '-infinity');
    v_to timestamptz := coalesce(p_to, 'infinity');
    v_lines text;
    v_totals text;
BEGIN
    IF v_from >= v_to THEN
        PERFORM gp_raise('400', 'invalid_window', 'from must be before to', 'from');
    END IF;
    SELECT coalesce(string_agg(format('line,%s,%s,%s,%s,%s,%s,%s', t.id,
               to_char(t.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
               t.kind, p.amount,
               coalesce((SELECT code FROM vouchers WHERE id = (t.refs ->> 'voucher_id')::bigint), ''),
               coalesce(t.refs ->> 'charge_id', ''), coalesce(t.refs ->> 'refund_id', '')),
               E'\n' ORDER BY t.id) || E'\n', '')
      INTO v_lines
      FROM postings p JOIN ledger_txns t ON t.id = p.txn_id
     WHERE p.account_id = v_acc AND t.kind IN ('capture', 'charge', 'refund')
       AND t.created_at >= v_from AND t.created_at < v_to;
    SELECT format(E'total,,,capture,%s,,,\ntotal,,,charge,%s,,,\ntotal,,,refund,%s,,,\ntotal,,,net,%s,,,\n',
               coalesce(sum(p.amount) FILTER (WHERE t.kind = 'capture'), 0),
               coalesce(sum(p.amount) FILTER (WHERE t.kind = 'charge'), 0),
               coalesce(sum(p.amount) FILTER (WHERE t.kind = 'refund'), 0),
               coalesce(sum(p.amount), 0))
      INTO v_totals
      FROM postings p JOIN ledger_txns t ON t.id = p.txn_id
     WHERE p.account_id = v_acc AND t.kind IN ('capture', 'charge', 'refund')
       AND t.created_at >= v_from AND t.created_at < v_to;
    RETURN E'record,txn_id,created_at,kind,points,voucher_code,charge_id,refund_id\n'
           || v_lines || v_totals;
END
$$;

-- The period the next settlement of a merchant starts at.
CREATE FUNCTION gp_m_period_start(p_merchant bigint) RETURNS timestamptz
LANGUAGE sql STABLE AS $$
    SELECT coalesce((SELECT max(period_end) FROM settlements WHERE merchant_id = p_merchant),
                    (SELECT created_at FROM merchants WHERE id = p_merchant))
$$;

-- A street admin closes the merchant's open period as settled: [previous end, p_until),
-- p_until defaulting to now() (or the end of month p_month 'YYYY-MM', Asia/Shanghai; it must
-- be over). The net points of the period go merchant -> settlement (kind 'settle'; the other
-- way when refunds exceeded the rest). The merchant account is locked before the totals are
-- read, and every capture/charge/refund checks for a settlement after taking that lock, so
-- the period cannot change afterwards (409 period_settled for a late one). A period without
-- captures, charges or refunds is 409 nothing_to_settle. Idempotent.
CREATE FUNCTION gp_settlement_close(p_actor bigint, p_merchant bigint, p_until timestamptz,
                                    p_month text, p_idem_principal text DEFAULT NULL,
                                    p_idem_key text DEFAULT NULL, p_request_hash text DEFAULT NULL)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_principal text := gp_idem_principal(p_idem_principal, p_actor);
    v_replay jsonb;
    m merchants;
    v_acc bigint;
    v_set bigint;
    v_start timestamptz;
    v_end timestamptz;
    tot jsonb;
    s settlements;
    v_txn bigint;
    v_resp jsonb;
BEGIN
    v_replay := gp_idem_begin(v_principal, p_idem_key, p_request_hash);
    IF v_replay IS NOT NULL THEN
        RETURN v_replay;
    END IF;
    m := gp_merchant_require(p_actor, p_merchant, 'admin');
    IF p_month IS NOT NULL THEN
        IF p_month !~ '^[0-9]{4}-(0[1-9]|1[0-2])$' THEN
            PERFORM gp_raise('400', 'invalid_period', 'month is YYYY-MM', 'month');
        END IF;
        v_end := ((p_month || '-01')::date + interval '1 month') AT TIME ZONE 'Asia/Shanghai';
    ELSE
        v_end := coalesce(p_until, now());
    END IF;
    IF v_end > now() THEN
        PERFORM gp_raise('409', 'period_not_over', 'a period can be settled only once it is over',
                         'until');
    END IF;
    v_acc := gp_mrc_account(m.id);
    v_set := gp_account_of('settlement', m.street_id);
    PERFORM gp_accounts_lock(ARRAY[v_acc, v_set]);
    v_start := gp_m_period_start(m.id);
    IF v_end <= v_start THEN
        PERFORM gp_raise('409', 'period_settled', 'this period is already settled', 'until');
    END IF;
    tot := gp_m_statement(m.id, v_start, v_end, NULL, 1) -> 'totals';
    -- An empty period is not settled (no empty settlement rows): the caller is told so, and
    -- the open period keeps its start.
    IF coalesce((tot ->> 'captures')::int, 0) + coalesce((tot ->> 'charges')::int, 0)
       + coalesce((tot ->> 'refunds')::int, 0) = 0 THEN
        PERFORM gp_raise('409', 'nothing_to_settle',
                         format('nothing happened between %s and %s: no settlement is made',
                                v_start, v_end), 'until');
    END IF;
    s.id := nextval('settlements_id_seq');
    IF (tot ->> 'net')::bigint <> 0 THEN
        v_txn := gp_ledger_post_legs('settle', p_actor,
            jsonb_build_object('settlement_id', s.id, 'merchant_id', m.id,
                               'period_start', v_start, 'period_end', v_end), NULL,
            ARRAY[v_acc, v_set],
            ARRAY[-(tot ->> 'net')::bigint, (tot ->> 'net')::bigint], v_principal, p_idem_key);
    END IF;
    INSERT INTO settlements (id, merchant_id, period_start, period_end, captures, capture_points,
                             charges, charge_points, refunds, refund_points, net, txn_id,
                             closed_by)
    VALUES (s.id, m.id, v_start, v_end, (tot ->> 'captures')::int,
            (tot ->> 'capture_points')::bigint, (tot ->> 'charges')::int,
            (tot ->> 'charge_points')::bigint, (tot ->> 'refunds')::int,
            (tot ->> 'refund_points')::bigint, (tot ->> 'net')::bigint, v_txn, p_actor)
    RETURNING * INTO s;
    v_resp := gp_settlement_json(s) || jsonb_build_object('receipt', jsonb_build_object('txn_id', v_txn));
    PERFORM gp_audit(p_actor, 'merchant.settle', 'merchant', m.id::text, m.street_id, NULL, v_resp);
    RETURN gp_idem_finish(v_principal, p_idem_key, p_request_hash, v_resp);
END
$$;

-- A merchant's settlements, newest first (internal: the caller resolved the merchant).
CREATE FUNCTION gp_m_settlements(p_merchant bigint, p_args jsonb) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    a jsonb := gp_targ_object(p_args, ARRAY['cursor', 'limit']);
    v_page record := gp_page_args(a);  -- lim, after
    items jsonb;
BEGIN
    SELECT coalesce(jsonb_agg(gp_settlement_json(x) ORDER BY x.id DESC), '[]') INTO items
      FROM (SELECT * FROM settlements WHERE merchant_id = p_merchant
               AND (v_page.after IS NULL OR id < v_page.after)
             ORDER BY id DESC LIMIT v_page.lim + 1) x;
    RETURN gp_page(items, v_page.lim) || jsonb_build_object('merchant_id', p_merchant,
        'open_period_start', gp_m_period_start(p_merchant));
END
$$;

-- One settlement with its statement lines (recomputed from the ledger: a settled period does
-- not change, so they always add up to the stored totals).
CREATE FUNCTION gp_m_settlement_get(p_merchant bigint, p_settlement bigint, p_after bigint,
                                    p_limit int) RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
DECLARE
    s settlements;
BEGIN
    SELECT * INTO s FROM settlements WHERE id = p_settlement AND merchant_id = p_merchant;
    IF NOT FOUND THEN
        PERFORM gp_raise('404', 'settlement_not_found', 'settlement not found', 'settlement_id');
    END IF;
    RETURN gp_settlement_json(s) || jsonb_build_object('statement',
        gp_m_statement(p_merchant, s.period_start, s.period_end, p_after, p_limit));
END
$$;

-- A settlement's period bounds (for its CSV); 404 when it is not the merchant's.
CREATE FUNCTION gp_m_settlement_csv(p_merchant bigint, p_settlement bigint) RETURNS text
LANGUAGE plpgsql STABLE AS $$
DECLARE
    s settlements;
BEGIN
    SELECT * INTO s FROM settlements WHERE id = p_settlement AND merchant_id = p_merchant;
    IF NOT FOUND THEN
        PERFORM gp_raise('404', 'settlement_not_found', 'settlement not found', 'settlement_id');
    END IF;
    RETURN gp_m_statement_csv(p_merchant, s.period_start, s.period_end);
END
$$;

-- Merchants the actor is staff of (the console's start page).
CREATE FUNCTION gp_console_merchants(p_actor bigint) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('items', coalesce(jsonb_agg(gp_merchant_json(m) ||
               jsonb_build_object('balance', (SELECT balance FROM accounts
                                               WHERE id = gp_mrc_account(m.id)))
               ORDER BY m.id), '[]'))
      FROM merchants m JOIN merchant_staff s ON s.merchant_id = m.id
      JOIN persons p ON p.id = s.person_id AND p.status = 'active'
     WHERE s.person_id = p_actor
$$;

------------------------------------------------------------------------------------------
-- Webhooks
------------------------------------------------------------------------------------------
-- Sets (p_url non-NULL, with the server-encrypted secret) or removes the merchant's webhook.
-- The server has checked the URL (https, no userinfo, no literal private address).
CREATE FUNCTION gp_mrc_webhook_set(p_key_id text, p_url text, p_secret_ct text,
                                   p_idem_principal text, p_idem_key text, p_request_hash text)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    m merchants := gp_mrc_principal(p_key_id);
    v_replay jsonb;
    v_resp jsonb;
BEGIN
    v_replay := gp_idem_begin(p_idem_principal, p_idem_key, p_request_hash);
    IF v_replay IS NOT NULL THEN
        RETURN v_replay;
    END IF;
    UPDATE merchants SET webhook_url = p_url, webhook_secret_ct = p_secret_ct, updated_at = now()
     WHERE id = m.id RETURNING * INTO m;
    v_resp := jsonb_build_object('merchant_id', m.id, 'webhook_url', m.webhook_url);
    RETURN gp_idem_finish(p_idem_principal, p_idem_key, p_request_hash, v_resp);
END
$$;

-- Recent webhook events and their delivery state (internal: merchant resolved by the caller).
CREATE FUNCTION gp_m_events(p_merchant bigint, p_args jsonb) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    a jsonb := gp_targ_object(p_args, ARRAY['cursor', 'limit']);
    v_page record := gp_page_args(a);  -- lim, after
    items jsonb;
BEGIN
    SELECT coalesce(jsonb_agg(jsonb_build_object('id', e.id, 'event_id', e.event_id,
               'type', e.type, 'created_at', e.created_at, 'attempts', e.attempts,
               'delivered_at', e.delivered_at, 'failed_at', e.failed_at,
               'next_attempt_at', CASE WHEN e.delivered_at IS NULL AND e.failed_at IS NULL
                                       THEN e.next_attempt_at END,
               'last_status', e.last_status, 'last_error', e.last_error) ORDER BY e.id DESC), '[]')
      INTO items
      FROM (SELECT * FROM merchant_events WHERE merchant_id = p_merchant
               AND (v_page.after IS NULL OR id < v_page.after)
             ORDER BY id DESC LIMIT v_page.lim + 1) e;
    RETURN gp_page(items, v_page.lim);
END
$$;

-- The janitor's webhook sweep: takes up to p_batch (at most 32) due events with FOR UPDATE
-- SKIP LOCKED and leases them for two minutes (next_attempt_at moves on, so another instance
-- does not take them meanwhile, and a crash mid-delivery means a retry, not a loss: delivery
-- is at least once, receivers dedupe by event id). Returns {"items": [{"id", "event_id",
-- "attempt", "merchant_id", "url", "secret_ct", "body"}], "more"}.
CREATE FUNCTION gp_webhook_claim(p_batch int) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_batch int := least(greatest(coalesce(p_batch, 32), 1), 32);
    items jsonb;
BEGIN
    WITH due AS (
        SELECT e.id FROM merchant_events e
         WHERE e.delivered_at IS NULL AND e.failed_at IS NULL AND e.next_attempt_at <= now()
         ORDER BY e.next_attempt_at LIMIT v_batch FOR UPDATE SKIP LOCKED),
    up AS (
        UPDATE merchant_events e SET attempts = e.attempts + 1,
               next_attempt_at = now() + interval '2 minutes'
          FROM due WHERE e.id = due.id
        RETURNING e.*)
    SELECT coalesce(jsonb_agg(jsonb_build_object('id', up.id, 'event_id', up.event_id,
               'attempt', up.attempts, 'merchant_id', up.merchant_id, 'url', m.webhook_url,
               'secret_ct', m.webhook_secret_ct,
               'body', jsonb_build_object('id', up.event_id, 'type', up.type,
                                          'created_at', up.created_at, 'data', up.payload)::text)
               ORDER BY up.id), '[]')
      INTO items
      FROM up JOIN merchants m ON m.id = up.merchant_id;
    RETURN jsonb_build_object('items', items, 'more', jsonb_array_length(items) >= v_batch);
END
$$;

-- Records the outcome of one delivery attempt (p_attempt guards against a late answer for
-- an attempt that was already retried). On failure the next attempt is due after
-- p_backoff_s * 2^(attempt-1), at most an hour, until p_retry_for_s after the event; then the
-- event is given up (failed_at). An event of a merchant that removed its webhook is dropped.
CREATE FUNCTION gp_webhook_result(p_id bigint, p_attempt int, p_ok boolean, p_status int,
                                  p_error text, p_backoff_s int, p_retry_for_s int)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    e merchant_events;
    v_next timestamptz;
BEGIN
    SELECT * INTO e FROM merchant_events WHERE id = p_id FOR UPDATE;
    IF NOT FOUND OR e.attempts <> p_attempt OR e.delivered_at IS NOT NULL
       OR e.failed_at IS NOT NULL THEN
        RETURN jsonb_build_object('id', p_id, 'applied', false);
    END IF;
    IF p_ok THEN
        UPDATE merchant_events SET delivered_at = now(), last_status = p_status, last_error = NULL
         WHERE id = p_id;
        RETURN jsonb_build_object('id', p_id, 'applied', true, 'state', 'delivered');
    END IF;
    v_next := now() + least(make_interval(secs => p_backoff_s * power(2, least(e.attempts - 1, 20))),
                            interval '1 hour');
    IF v_next > e.created_at + make_interval(secs => p_retry_for_s)
       OR NOT EXISTS (SELECT 1 FROM merchants WHERE id = e.merchant_id AND webhook_url IS NOT NULL) THEN
        UPDATE merchant_events SET failed_at = now(), last_status = p_status,
               last_error = left(p_error, 200) WHERE id = p_id;
        RETURN jsonb_build_object('id', p_id, 'applied', true, 'state', 'failed');
    END IF;
    UPDATE merchant_events SET next_attempt_at = v_next, last_status = p_status,
           last_error = left(p_error, 200) WHERE id = p_id;
    RETURN jsonb_build_object('id', p_id, 'applied', true, 'state', 'retry', 'next_attempt_at', v_next);
END
$$;

------------------------------------------------------------------------------------------
-- The voucher timer
------------------------------------------------------------------------------------------
-- Expires due vouchers (FOR UPDATE SKIP LOCKED: instances share the work, each voucher
-- expires once): the held points go back to the worker (kind 'void') and the item back to
-- stock. Also prunes pay codes a day past their expiry. Returns {"expired": n, "pruned": k,
-- "more", "effects": {"balances": [worker states for the cache]}, "errors": [...]}.
CREATE FUNCTION gp_merchant_sweep(p_batch int) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_batch int := least(greatest(coalesce(p_batch, 200), 1), 10000);
    v vouchers;
    v_txn bigint;
    v_n int := 0;
    v_pruned int;
    v_touched bigint[] := '{}';
    v_errors jsonb := '[]';
BEGIN
    FOR v IN SELECT * FROM vouchers WHERE state = 'issued' AND expires_at <= now()
              ORDER BY expires_at LIMIT v_batch FOR UPDATE SKIP LOCKED LOOP
        BEGIN
            v_txn := gp_mrc_void(v, NULL, 'expired');
            UPDATE vouchers SET state = 'expired', close_txn_id = v_txn, closed_at = now()
             WHERE id = v.id RETURNING * INTO v;
            PERFORM gp_mrc_event(v.merchant_id, 'voucher.expired', gp_voucher_json(v, 'merchant'));
            PERFORM gp_outbox('voucher.expired', v.worker_id,
                jsonb_build_object('voucher_id', v.id, 'txn_id', v_txn));
            v_touched := v_touched || v.worker_id;
            v_n := v_n + 1;
        EXCEPTION WHEN OTHERS THEN
            v_errors := v_errors || jsonb_build_array(jsonb_build_object(
                'voucher_id', v.id, 'sqlstate', SQLSTATE, 'message', SQLERRM));
        END;
    END LOOP;
    DELETE FROM paycodes WHERE ctid IN (
        SELECT ctid FROM paycodes WHERE expires_at < now() - interval '1 day'
         LIMIT v_batch FOR UPDATE SKIP LOCKED);
    GET DIAGNOSTICS v_pruned = ROW_COUNT;
    RETURN jsonb_build_object('expired', v_n, 'pruned', v_pruned, 'errors', v_errors,
        'more', v_n + jsonb_array_length(v_errors) >= v_batch,
        'effects', gp_fx_balances(v_touched));
END
$$;

