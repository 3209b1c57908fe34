-- sql/functions/20_auth.sql
-- Sessions and the caller's principal (tables: sql/migrations/0001_foundation.sql). Passwords
-- are checked by the server; only a session token's SHA-256 reaches the database.

------------------------------------------------------------------------------------------
-- Sessions
------------------------------------------------------------------------------------------
-- The stored hash and status for a login attempt; no row when the phone is unknown.
CREATE FUNCTION gp_login_lookup(p_phone text, OUT person_id bigint, OUT password_hash text,
                                OUT status text)
RETURNS SETOF record LANGUAGE sql STABLE AS $$
    SELECT id, password_hash, status FROM persons WHERE phone = p_phone
$$;

-- What a request needs to know about its caller; NULL when the token is unknown, expired or
-- revoked, or the person is suspended. "area" and "worker" let the server's claim gate check
-- gp_task_in_area without asking PostgreSQL.
CREATE FUNCTION gp_session_principal(p_token_hash bytea) RETURNS jsonb
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

CREATE FUNCTION gp_session_create(p_token_hash bytea, p_person bigint, p_ttl_s int, p_addr text)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    st text;
BEGIN
    SELECT status INTO st FROM persons WHERE id = p_person;
    IF st IS DISTINCT FROM 'active' THEN
        PERFORM gp_raise('401', 'invalid_credentials', 'wrong phone or password');
    END IF;
    INSERT INTO sessions (token_hash, person_id, expires_at, addr)
    VALUES (p_token_hash, p_person, now() + make_interval(secs => p_ttl_s), p_addr);
    -- Expired sessions are pruned here, a few at a time, rather than by yet another timer.
    DELETE FROM sessions WHERE ctid IN (
        SELECT ctid FROM sessions WHERE expires_at < now() - interval '1 day' LIMIT 10);
    RETURN gp_session_principal(p_token_hash);
END
$$;

CREATE FUNCTION gp_session_revoke(p_token_hash bytea) RETURNS jsonb LANGUAGE sql AS $$
    UPDATE sessions SET revoked_at = now()
     WHERE token_hash = p_token_hash AND revoked_at IS NULL;
    SELECT jsonb_build_object('status', 'logged_out');
$$;

CREATE FUNCTION gp_me(p_actor bigint) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT gp_person_json(p) || jsonb_build_object('unit', gp_unit_json(u),
             'unit_path', (SELECT jsonb_agg(jsonb_build_object('id', a.id, 'level', a.level,
                                                               'name', a.name) ORDER BY nlevel(a.path))
                             FROM org_units a WHERE u.path <@ a.path))
      FROM persons p JOIN org_units u ON u.id = p.unit_id
     WHERE p.id = p_actor
$$;

