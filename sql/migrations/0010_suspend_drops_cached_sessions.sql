-- sql/0010_suspend_drops_cached_sessions.sql
-- Suspending a person must stop their sessions at once, also where Redis still caches them:
-- gp_person_update now returns the hashes of the sessions it revoked, and the server deletes
-- their cache entries before answering. Otherwise unchanged from sql/0002_org_people.sql.

-- p_args: any of {name, tags, status}. Suspending also revokes the person's sessions.
CREATE OR REPLACE FUNCTION gp_person_update(p_actor bigint, p_person bigint, p_args jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    before persons;
    p persons;
    revoked text[] := '{}';
BEGIN
    before := gp_require_person(p_actor, p_person, gp_staff_roles());
    IF p_person = p_actor AND p_args ? 'status' THEN
        PERFORM gp_raise('403', 'forbidden', 'you cannot change your own status', 'status');
    END IF;
    IF gp_admin_rank(p_actor, before.unit_id) < 1 THEN
        PERFORM gp_raise('403', 'forbidden', 'your role cannot change people here');
    END IF;
    UPDATE persons SET
        name = coalesce(p_args ->> 'name', name),
        tags = CASE WHEN p_args ? 'tags'
                    THEN ARRAY(SELECT jsonb_array_elements_text(p_args -> 'tags')) ELSE tags END,
        status = coalesce(p_args ->> 'status', status),
        updated_at = now()
     WHERE id = p_person RETURNING * INTO p;
    IF p.status = 'suspended' AND before.status <> 'suspended' THEN
        WITH r AS (UPDATE sessions SET revoked_at = now()
                    WHERE person_id = p_person AND revoked_at IS NULL RETURNING token_hash)
        SELECT coalesce(array_agg(encode(token_hash, 'hex')), '{}') INTO revoked FROM r;
    END IF;
    PERFORM gp_audit(p_actor, 'person.update', 'person', p.id::text, p.unit_id,
                     gp_person_json(before), gp_person_json(p));
    -- The server drops these sessions from its Redis cache and strips the field before
    -- replying (a hash is not a token, but it is nobody's business either).
    RETURN gp_person_json(p) || jsonb_build_object('_revoked_sessions', to_jsonb(revoked));
END
$$;
