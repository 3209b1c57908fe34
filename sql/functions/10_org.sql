-- sql/functions/10_org.sql
-- Org units and people (tables: sql/migrations/0001_foundation.sql, 0002_org_people.sql).
-- Each function checks scope (00_helpers), does the change, writes the audit row and returns
-- the response body as jsonb.

CREATE FUNCTION gp_unit_json(u org_units) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('id', u.id, 'parent_id', u.parent_id, 'level', u.level,
                              'name', u.name, 'path', ltree2text(u.path),
                              'created_at', u.created_at)
$$;

CREATE FUNCTION gp_roles_json(p_person bigint) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT coalesce(jsonb_agg(jsonb_build_object('role', g.role, 'unit_id', g.unit_id)
                              ORDER BY g.role, g.unit_id), '[]'::jsonb)
      FROM role_grants g WHERE g.person_id = p_person
$$;

CREATE FUNCTION gp_person_json(p persons) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('id', p.id, 'phone', p.phone, 'name', p.name, 'status', p.status,
                              'unit_id', p.unit_id, 'tags', to_jsonb(p.tags),
                              'roles', gp_roles_json(p.id), 'created_at', p.created_at)
$$;

------------------------------------------------------------------------------------------
-- Org units
------------------------------------------------------------------------------------------
CREATE FUNCTION gp_unit_create(p_actor bigint, p_parent bigint, p_name text) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    parent org_units;
    u org_units;
BEGIN
    parent := gp_require_unit(p_actor, p_parent, gp_reader_roles(), 'parent_id');
    -- Grid staff manage micro-grids, community admins grids, street admins communities.
    IF gp_admin_rank(p_actor, p_parent) < (CASE parent.level WHEN 'street' THEN 3
                                                WHEN 'community' THEN 2 ELSE 1 END) THEN
        PERFORM gp_raise('403', 'forbidden', 'your role cannot create units here', 'parent_id');
    END IF;
    IF parent.level = 'micro_grid' THEN
        PERFORM gp_raise('400', 'invalid_level', 'a micro-grid cannot contain units', 'parent_id');
    END IF;
    BEGIN
        INSERT INTO org_units (parent_id, level, name)
        VALUES (p_parent, gp_level_below(parent.level), p_name) RETURNING * INTO u;
    EXCEPTION WHEN unique_violation THEN
        PERFORM gp_raise('409', 'unit_exists', 'a unit with this name already exists here', 'name');
    END;
    PERFORM gp_audit(p_actor, 'unit.create', 'unit', u.id::text, u.id, NULL, gp_unit_json(u));
    RETURN gp_unit_json(u);
END
$$;

CREATE FUNCTION gp_unit_get(p_actor bigint, p_unit bigint) RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
DECLARE
    u org_units;
BEGIN
    u := gp_require_unit(p_actor, p_unit, gp_reader_roles(), 'id');
    RETURN gp_unit_json(u) || jsonb_build_object(
        'children', (SELECT count(*) FROM org_units c WHERE c.parent_id = u.id),
        'people', (SELECT count(*) FROM persons p JOIN org_units pu ON pu.id = p.unit_id
                    WHERE pu.path <@ u.path));
END
$$;

-- Units visible to the actor, optionally the children of one unit; keyset pagination on id.
CREATE FUNCTION gp_unit_list(p_actor bigint, p_parent bigint, p_after bigint, p_limit int)
RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
DECLARE
    items jsonb;
BEGIN
    IF p_parent IS NOT NULL THEN
        PERFORM gp_require_unit(p_actor, p_parent, gp_reader_roles(), 'parent_id');
    END IF;
    SELECT coalesce(jsonb_agg(gp_unit_json(x) ORDER BY x.id), '[]') INTO items FROM (
        SELECT u.* FROM org_units u
         WHERE (p_parent IS NULL OR u.parent_id = p_parent)
           AND u.id > coalesce(p_after, 0)
           AND gp_role_covers(p_actor, gp_reader_roles(), u.path)
         ORDER BY u.id LIMIT p_limit + 1) x;
    RETURN gp_page(items, p_limit);
END
$$;

------------------------------------------------------------------------------------------
-- People
------------------------------------------------------------------------------------------
-- May `p_actor` grant `p_role` on `p_unit`? Street admins grant everything in their street;
-- community admins grant grid staff and below; grid staff grant workers and volunteers.
CREATE FUNCTION gp_can_grant(p_actor bigint, p_role text, p_unit bigint) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT gp_admin_rank(p_actor, p_unit) >= CASE p_role
        WHEN 'worker' THEN 1 WHEN 'volunteer' THEN 1 WHEN 'grid_staff' THEN 2
        ELSE 3 END
$$;

CREATE FUNCTION gp_role_grant_checked(p_actor bigint, p_person bigint, p_role text, p_unit bigint)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM gp_require_unit(p_actor, p_unit, gp_staff_roles(), 'roles');
    IF NOT gp_can_grant(p_actor, p_role, p_unit) THEN
        PERFORM gp_raise('403', 'forbidden', format('your role cannot grant %s here', p_role), 'roles');
    END IF;
    INSERT INTO role_grants (person_id, role, unit_id, granted_by)
    VALUES (p_person, p_role, p_unit, p_actor) ON CONFLICT DO NOTHING;
END
$$;

-- p_args: {phone, name, unit_id, tags?, roles?: [{role, unit_id}]}; validated by the server.
CREATE FUNCTION gp_person_create(p_actor bigint, p_args jsonb, p_password_hash text)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    p persons;
    r jsonb;
BEGIN
    PERFORM gp_require_unit(p_actor, (p_args ->> 'unit_id')::bigint, gp_staff_roles(), 'unit_id');
    BEGIN
        INSERT INTO persons (phone, name, unit_id, tags, password_hash)
        VALUES (p_args ->> 'phone', p_args ->> 'name', (p_args ->> 'unit_id')::bigint,
                coalesce(ARRAY(SELECT jsonb_array_elements_text(p_args -> 'tags')), '{}'),
                p_password_hash)
        RETURNING * INTO p;
    EXCEPTION WHEN unique_violation THEN
        PERFORM gp_raise('409', 'phone_taken', 'a person with this phone already exists', 'phone');
    END;
    FOR r IN SELECT * FROM jsonb_array_elements(coalesce(p_args -> 'roles', '[]')) LOOP
        PERFORM gp_role_grant_checked(p_actor, p.id, r ->> 'role',
                                      coalesce((r ->> 'unit_id')::bigint, p.unit_id));
    END LOOP;
    PERFORM gp_audit(p_actor, 'person.create', 'person', p.id::text, p.unit_id, NULL,
                     gp_person_json(p));
    RETURN gp_person_json(p);
END
$$;

-- A person the actor may see (staff or auditor over their home unit), else 404.
CREATE FUNCTION gp_require_person(p_actor bigint, p_person bigint, p_roles text[])
RETURNS persons LANGUAGE plpgsql STABLE AS $$
DECLARE
    p persons;
BEGIN
    SELECT * INTO p FROM persons WHERE id = p_person;
    IF NOT FOUND OR NOT gp_has_role(p_actor, p_roles, p.unit_id) THEN
        PERFORM gp_raise('404', 'person_not_found', 'person not found', 'id');
    END IF;
    RETURN p;
END
$$;

CREATE FUNCTION gp_person_get(p_actor bigint, p_person bigint) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT gp_person_json(gp_require_person(p_actor, p_person, gp_reader_roles()))
$$;

CREATE FUNCTION gp_person_list(p_actor bigint, p_unit bigint, p_role text, p_q text,
                               p_after bigint, p_limit int)
RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
DECLARE
    items jsonb;
    scope org_units;
BEGIN
    IF p_unit IS NOT NULL THEN
        scope := gp_require_unit(p_actor, p_unit, gp_reader_roles());
    END IF;
    SELECT coalesce(jsonb_agg(gp_person_json(x) ORDER BY x.id), '[]') INTO items FROM (
        SELECT p.* FROM persons p JOIN org_units pu ON pu.id = p.unit_id
         WHERE p.id > coalesce(p_after, 0)
           AND (p_unit IS NULL OR pu.path <@ scope.path)
           AND (p_role IS NULL OR EXISTS (SELECT 1 FROM role_grants r
                                           WHERE r.person_id = p.id AND r.role = p_role))
           AND (p_q IS NULL OR p.name LIKE '%' || p_q || '%' OR p.phone LIKE p_q || '%')
           AND gp_role_covers(p_actor, gp_reader_roles(), pu.path)
         ORDER BY p.id LIMIT p_limit + 1) x;
    RETURN gp_page(items, p_limit);
END
$$;

-- p_args: any of {name, tags, status}. Suspending also revokes the person's sessions.
CREATE FUNCTION gp_person_update(p_actor bigint, p_person bigint, p_args jsonb) RETURNS gp_reply
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
    -- The revoked sessions leave the server's Redis cache; their hashes are an effect, not
    -- part of the body (a hash is not a token, but it is nobody's business either).
    RETURN gp_out(gp_person_json(p), jsonb_build_object('drop_sessions', to_jsonb(revoked)));
END
$$;

-- p_grant: true to grant, false to revoke.
CREATE FUNCTION gp_person_role(p_actor bigint, p_person bigint, p_role text, p_unit bigint,
                               p_grant boolean)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    p persons;
    before jsonb;
BEGIN
    p := gp_require_person(p_actor, p_person, gp_staff_roles());
    before := gp_roles_json(p_person);
    IF p_grant THEN
        PERFORM gp_role_grant_checked(p_actor, p_person, p_role, p_unit);
    ELSE
        PERFORM gp_require_unit(p_actor, p_unit, gp_staff_roles(), 'unit_id');
        IF NOT gp_can_grant(p_actor, p_role, p_unit) THEN
            PERFORM gp_raise('403', 'forbidden', format('your role cannot revoke %s here', p_role), 'role');
        END IF;
        IF p_person = p_actor THEN
            PERFORM gp_raise('403', 'forbidden', 'you cannot revoke your own role', 'role');
        END IF;
        DELETE FROM role_grants WHERE person_id = p_person AND role = p_role AND unit_id = p_unit;
        IF NOT FOUND THEN
            PERFORM gp_raise('404', 'role_not_found', 'the person does not hold this role here', 'role');
        END IF;
    END IF;
    PERFORM gp_audit(p_actor, CASE WHEN p_grant THEN 'role.grant' ELSE 'role.revoke' END,
                     'person', p_person::text, p_unit, jsonb_build_object('roles', before),
                     jsonb_build_object('roles', gp_roles_json(p_person)));
    RETURN gp_person_json(p);
END
$$;

