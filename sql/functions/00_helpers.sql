-- sql/functions/00_helpers.sql
-- The steps every API function shares: scope checks, audit and outbox rows, idempotency,
-- argument checks and paging. Use these instead of writing a step again.
--
-- How the function files work (STYLE.md 38b): `gridpointsd migrate` drops the schema gp,
-- creates it again and loads sql/functions/NN_*.sql in name order into it, in the
-- transaction that applies the numbered migrations; the server calls the functions by their
-- plain names (search_path = gp, public). A fix is an ordinary edit of the function here; a
-- numbered migration (tables, indexes, constraints, trigger functions, backfills) never calls
-- one of these. SECURITY DEFINER functions pin search_path = gp, public, pg_temp.
--
-- Conventions for every function (sql/migrations/0001_foundation.sql has them too):
--  * Our own errors are raised with gp_raise(): SQLSTATE 'GPnnn' (nnn = HTTP status, GP402 =
--    insufficient points), HINT = stable machine code, MESSAGE = short lower-case text that is
--    safe to show a client, COLUMN = the offending input field. The server maps them 1:1.
--    gp_raise and gp_level_below stay in public (trigger functions call them).
--  * Business operations are SQL functions called in one statement = one transaction; each
--    checks scope, does the change, writes the audit row and returns the response body.
--  * The application connects as gp_app, which owns nothing and gets only the privileges it
--    needs.

------------------------------------------------------------------------------------------
-- Scope (SPEC §4.9): who may see and change what. Every check is the subtree rule: a role
-- granted on a unit covers the unit and everything below it.
------------------------------------------------------------------------------------------
-- Rank of the administrative roles: who may manage whom. Non-admin roles rank 0.
CREATE FUNCTION gp_role_rank(p_role text) RETURNS int LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE p_role WHEN 'street_admin' THEN 3 WHEN 'community_admin' THEN 2
                       WHEN 'grid_staff' THEN 1 ELSE 0 END
$$;

-- The one subtree rule (SPEC §4.9): does `p_actor` hold one of `p_roles` on `p_unit` or on an
-- ancestor of it? PL/pgSQL so that its one query is planned once per session (a LANGUAGE sql
-- function with a subquery is never inlined and is planned again in every transaction):
-- one index probe of the actor's grants (role_grants' primary key leads with person_id).
CREATE FUNCTION gp_has_role(p_actor bigint, p_roles text[], p_unit bigint) RETURNS boolean
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN EXISTS (
        SELECT 1
          FROM role_grants g
          JOIN org_units gu ON gu.id = g.unit_id
          JOIN org_units t ON t.id = p_unit
          JOIN persons p ON p.id = g.person_id AND p.status = 'active'
         WHERE g.person_id = p_actor AND g.role = ANY (p_roles) AND t.path <@ gu.path);
END
$$;

-- The subtree rule for a list: does `p_actor` hold one of `p_roles` on the unit with this path
-- or on an ancestor of it? (A plain SQL function, so the planner inlines it into the list's
-- query.) gp_has_role is the same rule for one unit id, for an active actor.
CREATE FUNCTION gp_role_covers(p_actor bigint, p_roles text[], p_path ltree) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (SELECT 1 FROM role_grants g JOIN org_units gu ON gu.id = g.unit_id
                    WHERE g.person_id = p_actor AND g.role = ANY (p_roles)
                      AND p_path <@ gu.path)
$$;

-- The highest administrative rank `p_actor` holds over `p_unit` (0 = none).
CREATE FUNCTION gp_admin_rank(p_actor bigint, p_unit bigint) RETURNS int LANGUAGE sql STABLE AS $$
    SELECT coalesce(max(gp_role_rank(g.role)), 0)
      FROM role_grants g
      JOIN org_units gu ON gu.id = g.unit_id
      JOIN org_units t ON t.id = p_unit
     WHERE g.person_id = p_actor AND t.path <@ gu.path
$$;

-- Staff roles that may read a unit's people and tasks.
CREATE FUNCTION gp_staff_roles() RETURNS text[] LANGUAGE sql IMMUTABLE AS $$
    SELECT ARRAY['grid_staff', 'community_admin', 'street_admin']
$$;

-- Roles that may read a unit's people, tasks and ledger: staff and auditors.
CREATE FUNCTION gp_reader_roles() RETURNS text[] LANGUAGE sql IMMUTABLE AS $$
    SELECT gp_staff_roles() || ARRAY['auditor']
$$;

-- Raises 404 when the unit is outside everything the actor can see with these roles (no
-- existence oracle), otherwise returns the unit.
CREATE FUNCTION gp_require_unit(p_actor bigint, p_unit bigint, p_roles text[],
                                p_field text DEFAULT 'unit_id')
RETURNS org_units LANGUAGE plpgsql STABLE AS $$
DECLARE
    u org_units;
BEGIN
    SELECT * INTO u FROM org_units WHERE id = p_unit;
    IF NOT FOUND OR NOT gp_has_role(p_actor, p_roles, p_unit) THEN
        PERFORM gp_raise('404', 'unit_not_found', 'unit not found', p_field);
    END IF;
    RETURN u;
END
$$;

-- May the actor read a worker's report on a task: staff or auditor over the task's unit, or
-- -- for a task of a unit above them (a community-wide task) -- staff over the worker's home
-- unit, so that grid staff see the work done in their grid (issue 14). Deciding stays with
-- the staff of the task's unit (gp_report_decide).
CREATE FUNCTION gp_report_reader(p_actor bigint, p_task_unit bigint, p_worker bigint)
RETURNS boolean LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN gp_has_role(p_actor, gp_reader_roles(), p_task_unit)
        OR EXISTS (SELECT 1 FROM persons w JOIN org_units wu ON wu.id = w.unit_id
                     JOIN org_units tu ON tu.id = p_task_unit
                    WHERE w.id = p_worker AND wu.path <@ tu.path
                      AND gp_has_role(p_actor, gp_staff_roles(), w.unit_id));
END
$$;

-- Is the actor an active worker or volunteer (the role on their home unit or above it)?
CREATE FUNCTION gp_task_is_worker(p_actor bigint) RETURNS boolean LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN EXISTS (SELECT 1 FROM persons p
                     JOIN org_units pu ON pu.id = p.unit_id
                     JOIN role_grants g ON g.person_id = p.id
                                       AND g.role IN ('worker', 'volunteer')
                     JOIN org_units gu ON gu.id = g.unit_id
                    WHERE p.id = p_actor AND p.status = 'active' AND pu.path <@ gu.path);
END
$$;

-- Does a task on p_unit reach the actor as a worker: is the unit their home unit or an
-- ancestor of it, and are they an active worker or volunteer (gp_task_is_worker)? One query,
-- planned once per session. (Tags are checked separately: missing tags are a 403, not a 404.)
CREATE FUNCTION gp_task_in_area(p_actor bigint, p_unit bigint) RETURNS boolean
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN EXISTS (SELECT 1 FROM persons p
                     JOIN org_units pu ON pu.id = p.unit_id
                     JOIN org_units tu ON tu.id = p_unit
                    WHERE p.id = p_actor AND p.status = 'active' AND pu.path <@ tu.path
                      AND EXISTS (SELECT 1 FROM role_grants g
                                    JOIN org_units gu ON gu.id = g.unit_id
                                   WHERE g.person_id = p_actor
                                     AND g.role IN ('worker', 'volunteer')
                                     AND pu.path <@ gu.path));
END
$$;

------------------------------------------------------------------------------------------
-- Audit log and outbox rows, written in the transaction of the change they record.
------------------------------------------------------------------------------------------
-- PL/pgSQL, not LANGUAGE sql: an INSERT in a sql function is planned again on every call; here
-- the plan is cached for the session.
-- Both rows carry a street (sql/migrations/0024_street_ledger.sql): the audit row the street of
-- its unit, the outbox row its person's; a caller that has the street at hand passes p_street,
-- else it is looked up inside the one INSERT (one index probe; 0 when there is no unit/person).
CREATE FUNCTION gp_audit(p_actor bigint, p_action text, p_object_type text, p_object_id text,
                         p_unit bigint, p_before jsonb, p_after jsonb, p_reason text DEFAULT NULL,
                         p_street bigint DEFAULT NULL)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO audit_log (actor_id, action, object_type, object_id, unit_id, before, after, reason,
                           street_id)
    VALUES (p_actor, p_action, p_object_type, p_object_id, p_unit, p_before, p_after, p_reason,
            coalesce(p_street, (SELECT ltree2text(subpath(u.path, 0, 1))::bigint
                                  FROM org_units u WHERE u.id = p_unit), 0));
END
$$;

CREATE FUNCTION gp_outbox(p_topic text, p_person bigint, p_payload jsonb,
                          p_street bigint DEFAULT NULL) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO outbox (topic, person_id, payload, street_id)
    VALUES (p_topic, p_person, p_payload,
            coalesce(p_street, (SELECT p.street_id FROM persons p WHERE p.id = p_person), 0));
END
$$;

------------------------------------------------------------------------------------------
-- Idempotency (SPEC §4.4, RELIABILITY §3.1): records written in the same transaction as the
-- effect; a key is scoped to its principal.
------------------------------------------------------------------------------------------
-- Whose idempotency keys a call uses: the principal the server passes (a merchant key, ...),
-- else the acting person.
CREATE FUNCTION gp_idem_principal(p_idem_principal text, p_actor bigint) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce(p_idem_principal, 'person:' || p_actor)
$$;

-- Call first in an idempotent operation. Returns the stored response when the key was already
-- used with the same request (the caller returns it as is), NULL when the operation should run:
--     v_replay := gp_idem_begin(v_principal, p_idem_key, p_request_hash);
--     IF v_replay IS NOT NULL THEN
--         RETURN v_replay;
--     END IF;
--     ...
--     RETURN gp_idem_finish(v_principal, p_idem_key, p_request_hash, v_reply);
-- p_key NULL = not idempotent (both do nothing); p_request_hash NULL counts as ''.
-- A concurrent request with the same key that is still running gets 409 (in flight); the same
-- key with another request gets 422.
CREATE FUNCTION gp_idem_begin(p_principal text, p_key text, p_request_hash text)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    r idempotency_keys;
BEGIN
    IF p_key IS NULL THEN
        RETURN NULL;
    END IF;
    IF NOT pg_try_advisory_xact_lock(hashtextextended(p_principal || '/' || p_key, 7)) THEN
        PERFORM gp_raise('409', 'request_in_flight',
            'a request with this idempotency key is still being processed', 'Idempotency-Key');
    END IF;
    SELECT * INTO r FROM idempotency_keys WHERE principal = p_principal AND key = p_key;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF r.request_hash <> coalesce(p_request_hash, '') THEN
        PERFORM gp_raise('422', 'idempotency_key_reused',
            'this idempotency key was used with a different request', 'Idempotency-Key');
    END IF;
    RETURN r.response || jsonb_build_object('idempotent_replay', true);
END
$$;

CREATE FUNCTION gp_idem_finish(p_principal text, p_key text, p_request_hash text, p_response jsonb)
RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    IF p_key IS NOT NULL THEN
        INSERT INTO idempotency_keys (principal, key, request_hash, response)
        VALUES (p_principal, p_key, coalesce(p_request_hash, ''), p_response);
    END IF;
    RETURN p_response;
END
$$;

-- Idempotency records are kept 48 hours (the published expiry policy; Stripe keeps 24 h at
-- least), then pruned by the janitor in batches. Returns {"pruned": n, "full": bool}. Two
-- instances pruning at once at worst wait briefly for each other: no row lock is needed (and
-- gp_app has no UPDATE right on these records, which FOR UPDATE would require).
CREATE FUNCTION gp_idem_prune(p_batch int) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    n int;
BEGIN
    DELETE FROM idempotency_keys WHERE ctid IN (
        SELECT ctid FROM idempotency_keys WHERE created_at < now() - interval '48 hours'
         LIMIT p_batch);
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN jsonb_build_object('pruned', n, 'full', n >= p_batch);
END
$$;

------------------------------------------------------------------------------------------
-- Arguments: a JSON object of known keys, each value checked with our error convention.
-- (Prefix gp_targ_: first written for the tasks.)
------------------------------------------------------------------------------------------
-- p_args must be a JSON object whose keys are all in p_allowed; NULL counts as {}.
CREATE FUNCTION gp_targ_object(p_args jsonb, p_allowed text[]) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    k text;
BEGIN
    IF p_args IS NULL OR jsonb_typeof(p_args) = 'null' THEN
        RETURN '{}'::jsonb;
    END IF;
    IF jsonb_typeof(p_args) <> 'object' THEN
        PERFORM gp_raise('400', 'invalid_body', 'the request body must be a json object');
    END IF;
    FOR k IN SELECT jsonb_object_keys(p_args) LOOP
        IF NOT k = ANY (p_allowed) THEN
            PERFORM gp_raise('400', 'unknown_field', format('unknown field "%s"', left(k, 64)),
                             left(k, 64));
        END IF;
    END LOOP;
    RETURN p_args;
END
$$;

-- The JSON value of a key, NULL when absent or null; raises missing_field when required.
CREATE FUNCTION gp_targ_value(p_args jsonb, p_key text, p_required boolean) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    v jsonb := p_args -> p_key;
BEGIN
    IF v IS NULL OR jsonb_typeof(v) = 'null' THEN
        IF p_required THEN
            PERFORM gp_raise('400', 'missing_field', format('%s is required', p_key), p_key);
        END IF;
        RETURN NULL;
    END IF;
    RETURN v;
END
$$;

-- A string of p_min..p_max characters without control characters other than tab and newline.
CREATE FUNCTION gp_targ_text(p_args jsonb, p_key text, p_min int, p_max int,
                             p_required boolean DEFAULT false) RETURNS text
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    v jsonb := gp_targ_value(p_args, p_key, p_required);
    s text;
BEGIN
    IF v IS NULL THEN
        RETURN NULL;
    END IF;
    IF jsonb_typeof(v) <> 'string' THEN
        PERFORM gp_raise('400', 'invalid_type', format('%s must be a string', p_key), p_key);
    END IF;
    s := v #>> '{}';
    IF length(s) < p_min OR length(s) > p_max OR (p_min > 0 AND btrim(s) = '') THEN
        PERFORM gp_raise('400', 'invalid_length',
            format('%s must be %s to %s characters', p_key, p_min, p_max), p_key);
    END IF;
    IF s ~ '[\x01-\x08\x0b\x0c\x0e-\x1f\x7f]' THEN
        PERFORM gp_raise('400', 'invalid_text', format('%s contains control characters', p_key),
                         p_key);
    END IF;
    RETURN s;
END
$$;

-- An integer JSON number in [p_min, p_max].
CREATE FUNCTION gp_targ_int(p_args jsonb, p_key text, p_min numeric, p_max numeric,
                            p_required boolean DEFAULT false) RETURNS bigint
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    v jsonb := gp_targ_value(p_args, p_key, p_required);
    n numeric;
BEGIN
    IF v IS NULL THEN
        RETURN NULL;
    END IF;
    IF jsonb_typeof(v) <> 'number' THEN
        PERFORM gp_raise('400', 'invalid_type', format('%s must be an integer', p_key), p_key);
    END IF;
    n := v::numeric;
    IF n <> trunc(n) THEN
        PERFORM gp_raise('400', 'invalid_type', format('%s must be an integer', p_key), p_key);
    END IF;
    IF n < p_min OR n > p_max THEN
        PERFORM gp_raise('400', 'out_of_range',
            format('%s must be between %s and %s', p_key, p_min, p_max), p_key);
    END IF;
    RETURN n::bigint;
END
$$;

-- A JSON number in [p_min, p_max], as double precision.
CREATE FUNCTION gp_targ_num(p_args jsonb, p_key text, p_min double precision,
                            p_max double precision, p_required boolean DEFAULT false)
RETURNS double precision LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    v jsonb := gp_targ_value(p_args, p_key, p_required);
    n double precision;
BEGIN
    IF v IS NULL THEN
        RETURN NULL;
    END IF;
    IF jsonb_typeof(v) <> 'number' THEN
        PERFORM gp_raise('400', 'invalid_type', format('%s must be a number', p_key), p_key);
    END IF;
    IF v::numeric < p_min::numeric OR v::numeric > p_max::numeric THEN
        PERFORM gp_raise('400', 'out_of_range',
            format('%s must be between %s and %s', p_key, p_min, p_max), p_key);
    END IF;
    n := round(v::numeric, 9)::double precision;  -- (9 decimals: a tenth of a millimetre)
    RETURN n;
END
$$;

CREATE FUNCTION gp_targ_bool(p_args jsonb, p_key text, p_required boolean DEFAULT false)
RETURNS boolean LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    v jsonb := gp_targ_value(p_args, p_key, p_required);
BEGIN
    IF v IS NULL THEN
        RETURN NULL;
    END IF;
    IF jsonb_typeof(v) <> 'boolean' THEN
        PERFORM gp_raise('400', 'invalid_type', format('%s must be true or false', p_key), p_key);
    END IF;
    RETURN v::boolean;
END
$$;

-- An RFC 3339 timestamp with an explicit offset ("2025-03-01T08:00:00+08:00"), 2000..2100.
CREATE FUNCTION gp_targ_ts(p_args jsonb, p_key text, p_required boolean DEFAULT false)
RETURNS timestamptz LANGUAGE plpgsql STABLE AS $$
DECLARE
    v jsonb := gp_targ_value(p_args, p_key, p_required);
    s text;
    ts timestamptz;
BEGIN
    IF v IS NULL THEN
        RETURN NULL;
    END IF;
    s := v #>> '{}';
    IF jsonb_typeof(v) <> 'string' OR s !~
       '^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}(:?\d{2})?)$' THEN
        PERFORM gp_raise('400', 'invalid_timestamp',
            format('%s must be an RFC 3339 timestamp with a time zone offset', p_key), p_key);
    END IF;
    BEGIN
        ts := s::timestamptz;
    EXCEPTION WHEN datetime_field_overflow OR invalid_datetime_format OR
                   invalid_time_zone_displacement_value THEN
        PERFORM gp_raise('400', 'invalid_timestamp', format('%s is not a valid time', p_key), p_key);
    END;
    IF ts < '2000-01-01T00:00:00Z' OR ts >= '2100-01-01T00:00:00Z' THEN
        PERFORM gp_raise('400', 'out_of_range', format('%s is out of range', p_key), p_key);
    END IF;
    RETURN ts;
END
$$;

-- A list of up to 16 tags of 1..32 characters; returned sorted and without duplicates.
CREATE FUNCTION gp_targ_tags(p_args jsonb, p_key text) RETURNS text[]
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    v jsonb := gp_targ_value(p_args, p_key, false);
    e jsonb;
BEGIN
    IF v IS NULL THEN
        RETURN '{}';
    END IF;
    IF jsonb_typeof(v) <> 'array' OR jsonb_array_length(v) > 16 THEN
        PERFORM gp_raise('400', 'invalid_tags', format('%s must be a list of at most 16 tags', p_key),
                         p_key);
    END IF;
    FOR e IN SELECT * FROM jsonb_array_elements(v) LOOP
        IF jsonb_typeof(e) <> 'string' OR length(e #>> '{}') NOT BETWEEN 1 AND 32
           OR (e #>> '{}') ~ '[\x01-\x1f\x7f]' THEN
            PERFORM gp_raise('400', 'invalid_tags', 'each tag must be a string of 1 to 32 characters',
                             p_key);
        END IF;
    END LOOP;
    RETURN ARRAY(SELECT DISTINCT x FROM jsonb_array_elements_text(v) x ORDER BY x);
END
$$;

------------------------------------------------------------------------------------------
-- Paging: page arguments in, {items, next_cursor} out. Lists whose page arguments come from
-- the server (p_after, p_limit) use gp_page alone.
------------------------------------------------------------------------------------------
-- The page arguments of a list call, one way for every list: p_args.limit (1..500, default
-- 50: gp_targ_limit) and p_args.cursor, absent on the first page. Without p_kind the cursor
-- is the id of the last item of the previous page (what gp_page returns as next_cursor for
-- items without "_cursor"): `after`. With p_kind it is an opaque keyset cursor of that kind
-- with p_nparts parts (gp_tcursor_decode): `cursor`. A bad one is 400 invalid_cursor.
--     v_page record := gp_page_args(a);   ... WHERE id > coalesce(v_page.after, 0)
--                                         ... LIMIT v_page.lim + 1 ... gp_page(items, v_page.lim)
CREATE FUNCTION gp_page_args(p_args jsonb, p_kind text DEFAULT NULL, p_nparts int DEFAULT 1,
                             OUT lim int, OUT after bigint, OUT cursor text[])
LANGUAGE plpgsql STABLE AS $$
BEGIN
    lim := gp_targ_limit(p_args);
    IF p_kind IS NOT NULL THEN
        cursor := gp_tcursor_decode(gp_targ_text(p_args, 'cursor', 1, 200), p_kind, p_nparts);
    ELSIF p_args ? 'cursor' THEN
        after := gp_tcursor_bigint(gp_targ_text(p_args, 'cursor', 1, 20));
    END IF;
END
$$;

-- The page size asked for in p_args.limit (1..500, default 50).
CREATE FUNCTION gp_targ_limit(p_args jsonb) RETURNS int LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce(gp_targ_int(p_args, 'limit', 1, 500), 50)::int
$$;

-- Cuts a list fetched with limit+1 rows into {items, next_cursor}. The cursor is the last
-- item's "_cursor" when the items carry one (opaque keyset cursors, removed from the items
-- returned), else its "id".
CREATE FUNCTION gp_page(p_items jsonb, p_limit int) RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
    SELECT jsonb_build_object(
        'items', CASE WHEN p_items -> 0 ? '_cursor'
                      THEN (SELECT jsonb_agg(e - '_cursor' ORDER BY n)
                              FROM jsonb_array_elements(p_items) WITH ORDINALITY x (e, n)
                             WHERE n <= p_limit)
                      WHEN jsonb_array_length(p_items) > p_limit THEN p_items - p_limit
                      ELSE p_items END,
        'next_cursor', CASE WHEN jsonb_array_length(p_items) > p_limit
                            THEN p_items -> (p_limit - 1)
                                 ->> CASE WHEN p_items -> 0 ? '_cursor' THEN '_cursor' ELSE 'id' END
                       END)
$$;

-- Opaque keyset cursors: base64url of "kind|part|part...". Decoding checks the kind and the
-- number of parts and raises 400 invalid_cursor on anything else.
CREATE FUNCTION gp_tcursor_encode(p_parts text[]) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT rtrim(translate(encode(convert_to(array_to_string(p_parts, '|'), 'UTF8'), 'base64'),
                           E'+/\n', '-_'), '=')
$$;

CREATE FUNCTION gp_tcursor_decode(p_cursor text, p_kind text, p_nparts int) RETURNS text[]
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    s text;
    parts text[];
BEGIN
    IF p_cursor IS NULL OR p_cursor = '' THEN
        RETURN NULL;
    END IF;
    BEGIN
        IF length(p_cursor) > 200 OR p_cursor !~ '^[A-Za-z0-9_-]+$' THEN
            RAISE EXCEPTION 'bad cursor';
        END IF;
        s := translate(p_cursor, '-_', '+/');
        s := s || repeat('=', (4 - length(s) % 4) % 4);
        parts := string_to_array(convert_from(decode(s, 'base64'), 'UTF8'), '|');
    EXCEPTION WHEN OTHERS THEN
        parts := NULL;
    END;
    IF parts IS NULL OR cardinality(parts) <> p_nparts + 1 OR parts[1] <> p_kind THEN
        PERFORM gp_raise('400', 'invalid_cursor', 'invalid cursor', 'cursor');
    END IF;
    RETURN parts[2:];
END
$$;

-- Validates a cursor part as a bigint / float8 / timestamptz (400 invalid_cursor otherwise).
CREATE FUNCTION gp_tcursor_bigint(p text) RETURNS bigint LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF p !~ '^-?[0-9]{1,19}$' THEN
        PERFORM gp_raise('400', 'invalid_cursor', 'invalid cursor', 'cursor');
    END IF;
    RETURN p::bigint;
EXCEPTION WHEN numeric_value_out_of_range THEN
    PERFORM gp_raise('400', 'invalid_cursor', 'invalid cursor', 'cursor');
END
$$;

CREATE FUNCTION gp_tcursor_float(p text) RETURNS double precision LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    RETURN p::double precision;
EXCEPTION WHEN OTHERS THEN
    PERFORM gp_raise('400', 'invalid_cursor', 'invalid cursor', 'cursor');
END
$$;

CREATE FUNCTION gp_tcursor_ts(p text) RETURNS timestamptz LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF p !~ '^-?[0-9]{1,16}$' THEN
        PERFORM gp_raise('400', 'invalid_cursor', 'invalid cursor', 'cursor');
    END IF;
    RETURN to_timestamp(p::numeric / 1000000);
END
$$;

-- A timestamptz as integer microseconds since the epoch (exact, for cursors).
CREATE FUNCTION gp_ts_micros(p timestamptz) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT (extract(epoch FROM p) * 1000000)::numeric(20, 0)::text
$$;

------------------------------------------------------------------------------------------
-- Replies with post-commit effects (docs/CONVENTIONS.md, "Effects"). A function whose commit
-- must reach Redis returns gp_reply: the body its caller may see, and separately what the
-- server applies after the commit. The server sends body as it is and reads only effects:
--   {"balances": [{worker_id, available, pending, version}],        balance cache
--    "awards": [{worker_id, available, pending, version, earned_month, earned_total,
--                rank_units, period}],                                balances and rankings
--    "gates": [{task_id, unit_id, free_slots, slots_version}],       claim gates
--    "gate_won": {task_id, unit_id, free_slots, slots_version, worker_id},  a claim's gate
--    "forget_keys": [key_id],                                         merchant key cache
--    "drop_sessions": [token hash hex]}                               session cache
-- every member optional, effects NULL when there is none. The server calls it as
-- SELECT body, effects FROM gp_x(...).
------------------------------------------------------------------------------------------
CREATE TYPE gp_reply AS (body jsonb, effects jsonb);

-- A gp_reply from a body and its effects; null members and empty lists are dropped, and
-- effects with nothing left are NULL.
CREATE FUNCTION gp_out(p_body jsonb, p_effects jsonb DEFAULT NULL) RETURNS gp_reply
LANGUAGE sql IMMUTABLE AS $$
    SELECT (p_body, (SELECT jsonb_object_agg(k, v) FROM jsonb_each(p_effects) x (k, v)
                      WHERE v NOT IN ('null'::jsonb, '[]'::jsonb)))::gp_reply
$$;
