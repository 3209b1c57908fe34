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


-- Roster import (issue 14; the console parses the XLSX/CSV and posts JSON rows): p_body
-- {"dry_run"?, "unit_id"?, "rows": [{"row", "phone", "name", "unit_id"? | "unit_path"?,
-- "tags"?, "role"?, "external_id"?}]} (the record body, checked here). Each row is keyed by
-- its phone: a new phone is created (no password: the person logs in with a WeChat invite
-- code), a known one in the actor's scope is updated when its name, unit, tags, role or
-- external id differ, else unchanged. Every row is checked before anything is written; any
-- error -> nothing is written and the answer carries "errors" [{row, field, code, message}]
-- (the server answers 422 import_invalid unless it was a dry run). Imports of one street run
-- one at a time (an advisory lock), so two concurrent uploads of one roster cannot both
-- create a person. -> {"dry_run", "rows", "created", "updated", "unchanged", "errors",
-- "people": [{row, id, phone, outcome}]}.
CREATE FUNCTION gp_people_import(p_actor bigint, p_body jsonb, p_max_rows int) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    b jsonb := gp_targ_object(p_body, ARRAY['dry_run', 'unit_id', 'rows']);
    v_dry boolean := coalesce(gp_targ_bool(b, 'dry_run'), false);
    v_default bigint := gp_targ_int(b, 'unit_id', 1, 9223372036854775807);
    v_rows jsonb := gp_targ_value(b, 'rows', true);
    v_allowed text[] := ARRAY['row', 'phone', 'name', 'unit_id', 'unit_path', 'tags', 'role',
                              'external_id'];
    v_errors jsonb := '[]';
    v_people jsonb := '[]';
    v_seen jsonb := '{}';
    v_streets bigint[] := '{}';
    v_n int;
    i int;
    r jsonb;
    k text;
    v_row bigint;
    v_phone text;
    v_name text;
    v_unit bigint;
    v_tags text[];
    v_role text;
    v_ext text;
    v_ok boolean;
    p persons;
    v_outcome text;
    v_created int := 0;
    v_updated int := 0;
    v_unchanged int := 0;
    v_plan jsonb := '[]';
    x jsonb;
BEGIN
    IF jsonb_typeof(v_rows) <> 'array' OR jsonb_array_length(v_rows) = 0 THEN
        PERFORM gp_raise('400', 'invalid_field', 'rows must be a non-empty list', 'rows');
    END IF;
    v_n := jsonb_array_length(v_rows);
    IF v_n > p_max_rows THEN
        PERFORM gp_raise('400', 'too_many_rows',
                         format('at most %s rows per import', p_max_rows), 'rows');
    END IF;
    IF NOT EXISTS (SELECT 1 FROM role_grants g JOIN persons me ON me.id = g.person_id
                    WHERE g.person_id = p_actor AND me.status = 'active'
                      AND g.role = ANY (gp_staff_roles())) THEN
        PERFORM gp_raise('403', 'forbidden', 'only staff import people');
    END IF;
    IF v_default IS NOT NULL THEN
        PERFORM gp_require_unit(p_actor, v_default, gp_staff_roles(), 'unit_id');
    END IF;

    FOR i IN 0 .. v_n - 1 LOOP
        r := v_rows -> i;
        v_ok := true;
        v_row := i + 1;
        IF jsonb_typeof(r) <> 'object' THEN
            v_errors := v_errors || jsonb_build_object('row', v_row, 'field', NULL,
                'code', 'invalid_field', 'message', 'a row must be an object');
            CONTINUE;
        END IF;
        IF jsonb_typeof(r -> 'row') = 'number' AND (r ->> 'row') ~ '^[0-9]{1,9}$'
           AND (r ->> 'row')::bigint >= 1 THEN
            v_row := (r ->> 'row')::bigint;
        ELSE
            v_errors := v_errors || jsonb_build_object('row', v_row, 'field', 'row',
                'code', CASE WHEN r ? 'row' THEN 'invalid_field' ELSE 'missing_field' END,
                'message', 'row must be the row number in the file (a positive integer)');
            v_ok := false;
        END IF;
        FOR k IN SELECT jsonb_object_keys(r) LOOP
            IF NOT k = ANY (v_allowed) THEN
                v_errors := v_errors || jsonb_build_object('row', v_row, 'field', left(k, 64),
                    'code', 'unknown_field', 'message', 'unknown column');
                v_ok := false;
            END IF;
        END LOOP;
        v_phone := CASE WHEN jsonb_typeof(r -> 'phone') = 'string' THEN btrim(r ->> 'phone') END;
        IF v_phone IS NULL OR v_phone !~ '^1[0-9]{10}$' THEN
            v_errors := v_errors || jsonb_build_object('row', v_row, 'field', 'phone',
                'code', CASE WHEN r ? 'phone' THEN 'invalid_field' ELSE 'missing_field' END,
                'message', 'phone must be a mainland mobile number (11 digits, starting with 1)');
            v_ok := false;
        ELSIF v_seen ? v_phone THEN
            v_errors := v_errors || jsonb_build_object('row', v_row, 'field', 'phone',
                'code', 'duplicate_row',
                'message', format('the same phone as row %s', v_seen ->> v_phone));
            v_ok := false;
        ELSE
            v_seen := v_seen || jsonb_build_object(v_phone, v_row);
        END IF;
        v_name := CASE WHEN jsonb_typeof(r -> 'name') = 'string' THEN btrim(r ->> 'name') END;
        IF v_name IS NULL OR length(v_name) NOT BETWEEN 1 AND 64 OR v_name ~ '[\x01-\x1f\x7f]' THEN
            v_errors := v_errors || jsonb_build_object('row', v_row, 'field', 'name',
                'code', CASE WHEN r ? 'name' THEN 'invalid_field' ELSE 'missing_field' END,
                'message', 'name must be 1 to 64 characters');
            v_ok := false;
        END IF;
        v_unit := NULL;
        IF r ? 'unit_id' THEN
            IF jsonb_typeof(r -> 'unit_id') = 'number' AND (r ->> 'unit_id') ~ '^[0-9]{1,18}$' THEN
                v_unit := (r ->> 'unit_id')::bigint;
            END IF;
        ELSIF jsonb_typeof(r -> 'unit_path') = 'string' THEN
            v_unit := gp_unit_by_path(r ->> 'unit_path');
        ELSE
            v_unit := v_default;
        END IF;
        IF v_unit IS NULL OR NOT EXISTS (SELECT 1 FROM org_units WHERE id = v_unit)
           OR NOT gp_has_role(p_actor, gp_staff_roles(), v_unit)
           OR NOT gp_can_grant(p_actor, 'worker', v_unit) THEN
            v_errors := v_errors || jsonb_build_object('row', v_row,
                'field', CASE WHEN r ? 'unit_path' THEN 'unit_path' ELSE 'unit_id' END,
                'code', CASE WHEN r ? 'unit_id' OR r ? 'unit_path' OR v_default IS NOT NULL
                             THEN 'unit_not_found' ELSE 'missing_field' END,
                'message', 'no such unit in your scope');
            v_ok := false;
        END IF;
        v_tags := '{}';
        IF r ? 'tags' AND jsonb_typeof(r -> 'tags') <> 'null' THEN
            IF jsonb_typeof(r -> 'tags') <> 'array' OR jsonb_array_length(r -> 'tags') > 32
               OR EXISTS (SELECT 1 FROM jsonb_array_elements(r -> 'tags') e
                           WHERE jsonb_typeof(e) <> 'string' OR length(e #>> '{}') NOT BETWEEN 1 AND 32
                              OR (e #>> '{}') ~ '[\x01-\x1f\x7f]') THEN
                v_errors := v_errors || jsonb_build_object('row', v_row, 'field', 'tags',
                    'code', 'invalid_field',
                    'message', 'tags must be a list of at most 32 tags of 1 to 32 characters');
                v_ok := false;
            ELSE
                v_tags := ARRAY(SELECT DISTINCT btrim(t) FROM jsonb_array_elements_text(r -> 'tags') t
                                 ORDER BY 1);
            END IF;
        END IF;
        v_role := coalesce(CASE WHEN jsonb_typeof(r -> 'role') = 'string' THEN r ->> 'role' END,
                           CASE WHEN r ? 'role' AND jsonb_typeof(r -> 'role') <> 'null' THEN '?' END,
                           'worker');
        IF v_role NOT IN ('worker', 'volunteer') THEN
            v_errors := v_errors || jsonb_build_object('row', v_row, 'field', 'role',
                'code', 'invalid_field', 'message', 'role must be worker or volunteer');
            v_ok := false;
        END IF;
        v_ext := NULL;
        IF r ? 'external_id' AND jsonb_typeof(r -> 'external_id') <> 'null' THEN
            v_ext := CASE WHEN jsonb_typeof(r -> 'external_id') = 'string' THEN btrim(r ->> 'external_id') END;
            IF v_ext IS NULL OR length(v_ext) NOT BETWEEN 1 AND 64 THEN
                v_errors := v_errors || jsonb_build_object('row', v_row, 'field', 'external_id',
                    'code', 'invalid_field', 'message', 'external_id must be 1 to 64 characters');
                v_ok := false;
            END IF;
        END IF;
        IF NOT v_ok THEN
            CONTINUE;
        END IF;
        -- the street of every row, for the lock below
        v_streets := v_streets || gp_street_of_unit(v_unit);
        v_plan := v_plan || jsonb_build_object('row', v_row, 'phone', v_phone, 'name', v_name,
            'unit_id', v_unit, 'tags', to_jsonb(v_tags), 'role', v_role, 'external_id', v_ext);
    END LOOP;

    -- One import per street at a time; then compare each row with what is stored.
    PERFORM pg_advisory_xact_lock(hashtext('gp_people_import'), s::int)
       FROM (SELECT DISTINCT unnest(v_streets) AS s ORDER BY 1) y;
    FOR x IN SELECT * FROM jsonb_array_elements(v_plan) LOOP
        SELECT * INTO p FROM persons WHERE phone = x ->> 'phone';
        IF FOUND AND NOT gp_has_role(p_actor, gp_staff_roles(), p.unit_id) THEN
            v_errors := v_errors || jsonb_build_object('row', (x ->> 'row')::bigint,
                'field', 'phone', 'code', 'phone_taken',
                'message', 'a person with this phone exists outside your scope');
            CONTINUE;
        END IF;
        IF p.id IS NOT NULL AND p.unit_id <> (x ->> 'unit_id')::bigint THEN
            v_errors := v_errors || jsonb_build_object('row', (x ->> 'row')::bigint,
                'field', 'unit_id', 'code', 'unit_change',
                'message', 'this person lives in another unit: an import does not move people');
            CONTINUE;
        END IF;
        IF x ->> 'external_id' IS NOT NULL AND EXISTS (
               SELECT 1 FROM person_external_ids e
                WHERE e.street_id = gp_street_of_unit((x ->> 'unit_id')::bigint)
                  AND e.external_id = x ->> 'external_id'
                  AND e.person_id IS DISTINCT FROM p.id) THEN
            v_errors := v_errors || jsonb_build_object('row', (x ->> 'row')::bigint,
                'field', 'external_id', 'code', 'external_id_taken',
                'message', 'another person of the street has this external id');
            CONTINUE;
        END IF;
        IF p.id IS NULL THEN
            v_outcome := 'created';
        ELSIF p.name = x ->> 'name'
              AND ARRAY(SELECT DISTINCT t FROM unnest(p.tags) t ORDER BY 1)
                  = ARRAY(SELECT jsonb_array_elements_text(x -> 'tags'))
              AND EXISTS (SELECT 1 FROM role_grants g WHERE g.person_id = p.id
                             AND g.role = x ->> 'role')
              AND (x ->> 'external_id' IS NULL OR EXISTS (
                   SELECT 1 FROM person_external_ids e WHERE e.person_id = p.id
                      AND e.external_id = x ->> 'external_id')) THEN
            v_outcome := 'unchanged';
        ELSE
            v_outcome := 'updated';
        END IF;
        v_people := v_people || jsonb_build_object('row', (x ->> 'row')::bigint,
            'phone', x ->> 'phone', 'id', p.id, 'outcome', v_outcome, '_x', x);
    END LOOP;

    IF jsonb_array_length(v_errors) > 0 OR v_dry THEN
        SELECT count(*) FILTER (WHERE e ->> 'outcome' = 'created'),
               count(*) FILTER (WHERE e ->> 'outcome' = 'updated'),
               count(*) FILTER (WHERE e ->> 'outcome' = 'unchanged')
          INTO v_created, v_updated, v_unchanged FROM jsonb_array_elements(v_people) e;
        RETURN jsonb_build_object('dry_run', v_dry, 'rows', v_n, 'created', v_created,
            'updated', v_updated, 'unchanged', v_unchanged,
            'errors', (SELECT coalesce(jsonb_agg(e ORDER BY (e ->> 'row')::bigint), '[]')
                         FROM jsonb_array_elements(v_errors) e),
            'people', (SELECT coalesce(jsonb_agg(e - '_x' ORDER BY (e ->> 'row')::bigint), '[]')
                         FROM jsonb_array_elements(v_people) e));
    END IF;

    -- No error: write, all in this transaction (v_plan now collects the answer).
    v_plan := '[]';
    FOR x IN SELECT * FROM jsonb_array_elements(v_people) LOOP
        r := x -> '_x';
        IF x ->> 'outcome' = 'created' THEN
            -- No password ('!' never verifies): the person binds WeChat with an invite code.
            INSERT INTO persons (phone, name, unit_id, tags, password_hash)
            VALUES (r ->> 'phone', r ->> 'name', (r ->> 'unit_id')::bigint,
                    ARRAY(SELECT jsonb_array_elements_text(r -> 'tags')), '!')
            RETURNING * INTO p;
            INSERT INTO role_grants (person_id, role, unit_id, granted_by)
            VALUES (p.id, r ->> 'role', p.unit_id, p_actor);
            PERFORM gp_audit(p_actor, 'person.create', 'person', p.id::text, p.unit_id, NULL,
                             gp_person_json(p), 'roster import');
            v_created := v_created + 1;
        ELSIF x ->> 'outcome' = 'updated' THEN
            SELECT * INTO p FROM persons WHERE id = (x ->> 'id')::bigint FOR UPDATE;
            x := x || jsonb_build_object('_before', gp_person_json(p));
            UPDATE persons SET name = r ->> 'name',
                               tags = ARRAY(SELECT jsonb_array_elements_text(r -> 'tags')),
                               updated_at = now()
             WHERE id = p.id RETURNING * INTO p;
            INSERT INTO role_grants (person_id, role, unit_id, granted_by)
            VALUES (p.id, r ->> 'role', p.unit_id, p_actor) ON CONFLICT DO NOTHING;
            PERFORM gp_audit(p_actor, 'person.update', 'person', p.id::text, p.unit_id,
                             x -> '_before', gp_person_json(p), 'roster import');
            v_updated := v_updated + 1;
        ELSE
            p.id := (x ->> 'id')::bigint;
            v_unchanged := v_unchanged + 1;
        END IF;
        IF r ->> 'external_id' IS NOT NULL THEN
            INSERT INTO person_external_ids (street_id, external_id, person_id)
            VALUES (gp_street_of_unit((r ->> 'unit_id')::bigint), r ->> 'external_id', p.id)
            ON CONFLICT (street_id, person_id) DO UPDATE SET external_id = EXCLUDED.external_id;
        END IF;
        v_plan := v_plan || jsonb_build_object('row', (x ->> 'row')::bigint, 'phone', x ->> 'phone',
                                               'id', p.id, 'outcome', x ->> 'outcome');
    END LOOP;
    RETURN jsonb_build_object('dry_run', false, 'rows', v_n, 'created', v_created,
        'updated', v_updated, 'unchanged', v_unchanged, 'errors', '[]'::jsonb,
        'people', (SELECT coalesce(jsonb_agg(e ORDER BY (e ->> 'row')::bigint), '[]')
                     FROM jsonb_array_elements(v_plan) e));
END
$$;

-- A unit by the names of its path from the street down, "Street/Community/Grid" (blanks
-- around the names ignored); NULL when there is none.
CREATE FUNCTION gp_unit_by_path(p_path text) RETURNS bigint LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_id bigint;
    n text;
    v_first boolean := true;
BEGIN
    IF p_path IS NULL OR length(p_path) > 500 THEN
        RETURN NULL;
    END IF;
    FOREACH n IN ARRAY string_to_array(p_path, '/') LOOP
        SELECT id INTO v_id FROM org_units
         WHERE name = btrim(n)
           AND CASE WHEN v_first THEN parent_id IS NULL ELSE parent_id = v_id END;
        IF NOT FOUND THEN
            RETURN NULL;
        END IF;
        v_first := false;
    END LOOP;
    RETURN v_id;
END
$$;
