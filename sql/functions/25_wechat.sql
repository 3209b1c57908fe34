-- sql/functions/25_wechat.sql
-- WeChat login and binding (server/api_wechat.c; tables in sql/migrations/0013_wechat.sql). The
-- server has WeChat vouch for the openid before any of these run; bind tickets, invite codes
-- and session tokens arrive as SHA-256 hashes.

------------------------------------------------------------------------------------------
-- Bindings
------------------------------------------------------------------------------------------
-- What the audit log and the replies show of a binding (the unionid stays in the table).
CREATE FUNCTION gp_wechat_binding_json(b wechat_bindings) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT jsonb_build_object('id', b.id, 'person_id', b.person_id, 'app_id', b.app_id,
                              'openid', b.openid, 'created_at', b.created_at)
$$;

-- A login by a WeChat user WeChat just vouched for. Bound to an active person: a session
-- (gp_session_create, as a password login) -> {"bound": true, "person": principal}. The same
-- user bound through our other app (same unionid): this app's binding is added (audited) and
-- the same. Otherwise a bind ticket for p_ticket_ttl_s -> {"bound": false, "expires_at"}.
-- A suspended person's binding answers 403 account_inactive.
CREATE FUNCTION gp_wechat_login(p_app text, p_openid text, p_unionid text, p_session_hash bytea,
                                p_session_ttl_s int, p_addr text, p_ticket_hash bytea,
                                p_ticket_ttl_s int)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    b wechat_bindings;
    st text;
    t wechat_bind_tickets;
BEGIN
    SELECT * INTO b FROM wechat_bindings WHERE app_id = p_app AND openid = p_openid;
    IF b.id IS NULL AND p_unionid IS NOT NULL THEN
        SELECT * INTO b FROM wechat_bindings WHERE unionid = p_unionid ORDER BY id LIMIT 1;
        IF b.id IS NOT NULL THEN
            INSERT INTO wechat_bindings (person_id, app_id, openid, unionid)
            VALUES (b.person_id, p_app, p_openid, p_unionid)
            ON CONFLICT DO NOTHING RETURNING * INTO b;
            IF b.id IS NOT NULL THEN
                PERFORM gp_audit(b.person_id, 'wechat.bind', 'person', b.person_id::text,
                                 (SELECT unit_id FROM persons WHERE id = b.person_id), NULL,
                                 gp_wechat_binding_json(b), 'same unionid as a bound app');
            END IF;
        END IF;
    END IF;
    IF b.id IS NOT NULL THEN
        SELECT status INTO st FROM persons WHERE id = b.person_id;
        IF st IS DISTINCT FROM 'active' THEN
            PERFORM gp_raise('403', 'account_inactive', 'this account is suspended');
        END IF;
        UPDATE wechat_bindings SET last_login_at = now(), unionid = coalesce(p_unionid, unionid)
         WHERE id = b.id;
        RETURN jsonb_build_object('bound', true, 'person',
                                  gp_session_create(p_session_hash, b.person_id, p_session_ttl_s,
                                                    p_addr));
    END IF;
    -- Old tickets are pruned here, a few at a time, rather than by yet another timer.
    DELETE FROM wechat_bind_tickets WHERE ctid IN (
        SELECT ctid FROM wechat_bind_tickets WHERE expires_at < now() - interval '1 day' LIMIT 10);
    INSERT INTO wechat_bind_tickets (ticket_hash, app_id, openid, unionid, expires_at)
    VALUES (p_ticket_hash, p_app, p_openid, p_unionid, now() + make_interval(secs => p_ticket_ttl_s))
    RETURNING * INTO t;
    RETURN jsonb_build_object('bound', false, 'expires_at', t.expires_at);
END
$$;

-- Binds the ticket's WeChat user to the person an invite code was issued for, when p_phone is
-- that person's phone, then opens a session -> {"bound": true, "person": principal}.
--   * a ticket that is unknown, expired, used or out of attempts: 401 bind_ticket_invalid;
--   * a wrong, used, expired or replaced invite, an invite of another person (the phone does
--     not fit) or a suspended person: the ticket's attempt is counted and kept (a value, not
--     an exception, so that the count commits) -> {"error": {code invite_invalid, ...}};
--   * the WeChat user bound meanwhile through another ticket: 409 wechat_already_bound.
-- A person's earlier binding for the same app is replaced (audited with its before).
CREATE FUNCTION gp_wechat_bind(p_ticket_hash bytea, p_phone text, p_invite_hash bytea,
                               p_max_attempts int, p_session_hash bytea, p_session_ttl_s int,
                               p_addr text)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    t wechat_bind_tickets;
    i wechat_invites;
    p persons;
    old wechat_bindings;
    b wechat_bindings;
BEGIN
    SELECT * INTO t FROM wechat_bind_tickets WHERE ticket_hash = p_ticket_hash FOR UPDATE;
    IF t.id IS NULL OR t.used_at IS NOT NULL OR t.expires_at <= now()
       OR t.attempts >= p_max_attempts THEN
        PERFORM gp_raise('401', 'bind_ticket_invalid',
                         'the bind ticket is unknown, expired or used; log in with wechat again',
                         'ticket');
    END IF;
    UPDATE wechat_bind_tickets SET attempts = attempts + 1 WHERE id = t.id;
    SELECT * INTO i FROM wechat_invites WHERE code_hash = p_invite_hash FOR UPDATE;
    IF i.id IS NOT NULL THEN
        SELECT * INTO p FROM persons WHERE id = i.person_id;
    END IF;
    IF i.id IS NULL OR i.used_at IS NOT NULL OR i.revoked_at IS NOT NULL OR i.expires_at <= now()
       OR p.phone IS DISTINCT FROM p_phone OR p.status IS DISTINCT FROM 'active' THEN
        RETURN jsonb_build_object('error', jsonb_build_object(
            'code', 'invite_invalid', 'field', 'invite_code',
            'message', 'the invite code does not fit this phone, or it expired or was used'));
    END IF;
    IF EXISTS (SELECT 1 FROM wechat_bindings WHERE app_id = t.app_id AND openid = t.openid) THEN
        PERFORM gp_raise('409', 'wechat_already_bound',
                         'this wechat account is bound already; log in with wechat again');
    END IF;
    DELETE FROM wechat_bindings WHERE person_id = p.id AND app_id = t.app_id RETURNING * INTO old;
    INSERT INTO wechat_bindings (person_id, app_id, openid, unionid)
    VALUES (p.id, t.app_id, t.openid, t.unionid) RETURNING * INTO b;
    UPDATE wechat_invites SET used_at = now() WHERE id = i.id;
    UPDATE wechat_bind_tickets SET used_at = now() WHERE id = t.id;
    PERFORM gp_audit(p.id, 'wechat.bind', 'person', p.id::text, p.unit_id,
                     CASE WHEN old.id IS NULL THEN NULL ELSE gp_wechat_binding_json(old) END,
                     gp_wechat_binding_json(b),
                     format('invite %s issued by person %s', i.id, i.issued_by));
    UPDATE wechat_bindings SET last_login_at = now() WHERE id = b.id;
    RETURN jsonb_build_object('bound', true, 'person',
                              gp_session_create(p_session_hash, p.id, p_session_ttl_s, p_addr));
END
$$;

-- Removes a person's WeChat bindings: the person themselves, or staff whose subtree covers
-- the person (404 otherwise, as for a missing person). Each removal is audited. A binding is
-- removed because a phone was lost or changed hands, so when anything was unbound the
-- person's sessions end too -- all of them when staff unbind, all but the caller's own
-- (p_keep, the SHA-256 of its token) when the person unbinds from the phone they hold.
CREATE FUNCTION gp_wechat_unbind(p_actor bigint, p_person bigint, p_keep bytea)
RETURNS gp_reply
LANGUAGE plpgsql AS $$
DECLARE
    p persons;
    b wechat_bindings;
    n int := 0;
    revoked text[] := '{}';
BEGIN
    IF p_actor = p_person THEN
        SELECT * INTO p FROM persons WHERE id = p_person;
    ELSE
        p := gp_require_person(p_actor, p_person, gp_staff_roles());
    END IF;
    FOR b IN DELETE FROM wechat_bindings WHERE person_id = p.id RETURNING * LOOP
        PERFORM gp_audit(p_actor, 'wechat.unbind', 'person', p.id::text, p.unit_id,
                         gp_wechat_binding_json(b), NULL);
        n := n + 1;
    END LOOP;
    IF n > 0 THEN
        WITH r AS (UPDATE sessions SET revoked_at = now()
                    WHERE person_id = p.id AND revoked_at IS NULL
                      AND token_hash IS DISTINCT FROM p_keep
                RETURNING token_hash)
        SELECT coalesce(array_agg(encode(token_hash, 'hex')), '{}') INTO revoked FROM r;
    END IF;
    RETURN gp_out(jsonb_build_object('person_id', p.id, 'unbound', n,
                                     'sessions_ended', cardinality(revoked)),
                  jsonb_build_object('drop_sessions', to_jsonb(revoked)));
END
$$;

------------------------------------------------------------------------------------------
-- Invites
------------------------------------------------------------------------------------------
-- Staff whose subtree covers the person (404 otherwise) issue a one-time invite code, valid
-- for p_ttl_s; it replaces the person's open invites. The server made the code and adds it to
-- the reply once -> {id, person_id, expires_at}.
CREATE FUNCTION gp_wechat_invite_create(p_actor bigint, p_person bigint, p_code_hash bytea,
                                        p_ttl_s int)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    p persons;
    i wechat_invites;
BEGIN
    p := gp_require_person(p_actor, p_person, gp_staff_roles());
    IF p.status IS DISTINCT FROM 'active' THEN
        PERFORM gp_raise('409', 'person_inactive', 'this person is suspended', 'id');
    END IF;
    UPDATE wechat_invites SET revoked_at = now()
     WHERE person_id = p.id AND used_at IS NULL AND revoked_at IS NULL;
    INSERT INTO wechat_invites (person_id, code_hash, issued_by, expires_at)
    VALUES (p.id, p_code_hash, p_actor, now() + make_interval(secs => p_ttl_s))
    RETURNING * INTO i;
    PERFORM gp_audit(p_actor, 'wechat.invite', 'person', p.id::text, p.unit_id, NULL,
                     jsonb_build_object('invite_id', i.id, 'expires_at', i.expires_at));
    RETURN jsonb_build_object('id', i.id, 'person_id', p.id, 'expires_at', i.expires_at);
END
$$;
