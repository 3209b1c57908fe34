-- sql/0001_foundation.sql
-- Foundation: org tree, people, roles, sessions, audit log, idempotency records, outbox.
--
-- Conventions for every migration and SQL function in this project:
--  * Our own errors are raised with gp_raise(): SQLSTATE 'GPnnn' (nnn = HTTP status, GP402 =
--    insufficient points), HINT = stable machine code, MESSAGE = short lower-case text that is
--    safe to show a client, COLUMN = the offending input field. The server maps them 1:1.
--  * Business operations are SQL functions called in one statement = one transaction.
--  * The application connects as gp_app, which owns nothing and gets only the privileges it
--    needs; append-only tables grant no UPDATE/DELETE and have triggers refusing them anyway.

CREATE EXTENSION IF NOT EXISTS ltree;

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'gp_app') THEN
        CREATE ROLE gp_app LOGIN;
    END IF;
END
$$;

-- The server checks at start-up that the schema is as new as it needs (schema_migrations is
-- created by `gridpointsd migrate` before the first file runs).
GRANT SELECT ON schema_migrations TO gp_app;

-- Raise one of our own errors (see the header comment).
CREATE FUNCTION gp_raise(p_status text, p_code text, p_message text, p_field text DEFAULT NULL)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION USING ERRCODE = 'GP' || p_status, MESSAGE = p_message, HINT = p_code,
        COLUMN = coalesce(p_field, '');
END
$$;

-- Refuses UPDATE and DELETE on append-only tables, whatever the role.
CREATE FUNCTION gp_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'table % is append-only', TG_TABLE_NAME USING ERRCODE = 'GP403',
        HINT = 'append_only';
END
$$;

------------------------------------------------------------------------------------------
-- Org tree: street -> community -> grid -> micro_grid. path is the ltree of ids from the
-- street down ("1.5.23"), so "X is in the subtree of Y" is `x.path <@ y.path`.
------------------------------------------------------------------------------------------
CREATE TABLE org_units (
    id          bigserial PRIMARY KEY,
    parent_id   bigint REFERENCES org_units (id),
    level       text NOT NULL CHECK (level IN ('street', 'community', 'grid', 'micro_grid')),
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    path        ltree NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CHECK ((level = 'street') = (parent_id IS NULL))
);
CREATE UNIQUE INDEX org_units_sibling_name ON org_units (coalesce(parent_id, 0), name);
CREATE INDEX org_units_path ON org_units USING gist (path);
CREATE INDEX org_units_parent ON org_units (parent_id);

CREATE FUNCTION gp_level_below(p_level text) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE p_level WHEN 'street' THEN 'community' WHEN 'community' THEN 'grid'
                        WHEN 'grid' THEN 'micro_grid' END
$$;

CREATE FUNCTION org_units_before_insert() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    parent org_units;
BEGIN
    IF NEW.id IS NULL THEN
        NEW.id := nextval('org_units_id_seq');
    END IF;
    IF NEW.parent_id IS NULL THEN
        NEW.path := text2ltree(NEW.id::text);
        RETURN NEW;
    END IF;
    SELECT * INTO parent FROM org_units WHERE id = NEW.parent_id;
    IF NOT FOUND THEN
        PERFORM gp_raise('404', 'unit_not_found', 'parent unit not found', 'parent_id');
    END IF;
    IF gp_level_below(parent.level) IS DISTINCT FROM NEW.level THEN
        PERFORM gp_raise('400', 'invalid_level',
            format('a %s can only contain a %s', parent.level,
                   coalesce(gp_level_below(parent.level), 'nothing')), 'level');
    END IF;
    NEW.path := parent.path || text2ltree(NEW.id::text);
    RETURN NEW;
END
$$;
CREATE TRIGGER org_units_before_insert BEFORE INSERT ON org_units
    FOR EACH ROW EXECUTE FUNCTION org_units_before_insert();

CREATE FUNCTION org_units_no_move() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.parent_id IS DISTINCT FROM OLD.parent_id OR NEW.path <> OLD.path
       OR NEW.level <> OLD.level THEN
        PERFORM gp_raise('409', 'unit_immutable', 'a unit cannot be moved or change level');
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER org_units_no_move BEFORE UPDATE ON org_units
    FOR EACH ROW EXECUTE FUNCTION org_units_no_move();

------------------------------------------------------------------------------------------
-- People and roles. A person has a home unit (where they live/work) and any number of role
-- grants, each on a unit; a grant covers the unit's whole subtree (SPEC §3, §4.9).
------------------------------------------------------------------------------------------
CREATE TABLE persons (
    id             bigserial PRIMARY KEY,
    phone          text NOT NULL UNIQUE CHECK (phone ~ '^1[0-9]{10}$'),
    name           text NOT NULL CHECK (length(name) BETWEEN 1 AND 64),
    status         text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended')),
    unit_id        bigint NOT NULL REFERENCES org_units (id),
    tags           text[] NOT NULL DEFAULT '{}' CHECK (cardinality(tags) <= 32),
    password_hash  text NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX persons_unit ON persons (unit_id);

CREATE TABLE role_grants (
    person_id   bigint NOT NULL REFERENCES persons (id),
    role        text NOT NULL CHECK (role IN ('worker', 'volunteer', 'grid_staff',
                    'community_admin', 'street_admin', 'auditor', 'merchant_staff')),
    unit_id     bigint NOT NULL REFERENCES org_units (id),
    granted_by  bigint REFERENCES persons (id),
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (person_id, role, unit_id)
);
CREATE INDEX role_grants_unit ON role_grants (unit_id);

-- Rank of the administrative roles: who may manage whom. Non-admin roles rank 0.
CREATE FUNCTION gp_role_rank(p_role text) RETURNS int LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE p_role WHEN 'street_admin' THEN 3 WHEN 'community_admin' THEN 2
                       WHEN 'grid_staff' THEN 1 ELSE 0 END
$$;

-- The one subtree rule (SPEC §4.9): does `p_actor` hold one of `p_roles` on `p_unit` or on an
-- ancestor of it?
CREATE FUNCTION gp_has_role(p_actor bigint, p_roles text[], p_unit bigint) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (
        SELECT 1
          FROM role_grants g
          JOIN org_units gu ON gu.id = g.unit_id
          JOIN org_units t ON t.id = p_unit
          JOIN persons p ON p.id = g.person_id AND p.status = 'active'
         WHERE g.person_id = p_actor AND g.role = ANY (p_roles) AND t.path <@ gu.path)
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

------------------------------------------------------------------------------------------
-- Sessions: an opaque random token; only its SHA-256 is stored.
------------------------------------------------------------------------------------------
CREATE TABLE sessions (
    token_hash  bytea PRIMARY KEY CHECK (length(token_hash) = 32),
    person_id   bigint NOT NULL REFERENCES persons (id),
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    revoked_at  timestamptz,
    addr        text
);
CREATE INDEX sessions_person ON sessions (person_id);
CREATE INDEX sessions_expires ON sessions (expires_at);

------------------------------------------------------------------------------------------
-- Audit log: every privileged action, written in the same transaction as the action.
------------------------------------------------------------------------------------------
CREATE TABLE audit_log (
    id           bigserial PRIMARY KEY,
    at           timestamptz NOT NULL DEFAULT now(),
    actor_id     bigint REFERENCES persons (id),
    action       text NOT NULL,
    object_type  text NOT NULL,
    object_id    text NOT NULL,
    unit_id      bigint REFERENCES org_units (id),
    before       jsonb,
    after        jsonb,
    reason       text
);
CREATE INDEX audit_log_unit_at ON audit_log (unit_id, at);
CREATE INDEX audit_log_object ON audit_log (object_type, object_id);
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION gp_append_only();

CREATE FUNCTION gp_audit(p_actor bigint, p_action text, p_object_type text, p_object_id text,
                         p_unit bigint, p_before jsonb, p_after jsonb, p_reason text DEFAULT NULL)
RETURNS void LANGUAGE sql AS $$
    INSERT INTO audit_log (actor_id, action, object_type, object_id, unit_id, before, after, reason)
    VALUES (p_actor, p_action, p_object_type, p_object_id, p_unit, p_before, p_after, p_reason)
$$;

------------------------------------------------------------------------------------------
-- Idempotency records (SPEC §4.4, RELIABILITY §3.1). Written in the same transaction as the
-- effect by gp_idem_begin/gp_idem_finish. A key is scoped to its principal.
------------------------------------------------------------------------------------------
CREATE TABLE idempotency_keys (
    principal     text NOT NULL,
    key           text NOT NULL CHECK (length(key) BETWEEN 1 AND 255),
    request_hash  text NOT NULL,
    response      jsonb NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (principal, key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);

-- Call first in an idempotent operation. Returns the stored response when the key was already
-- used with the same request (the caller returns it as is), NULL when the operation should run.
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
    IF r.request_hash <> p_request_hash THEN
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
        VALUES (p_principal, p_key, p_request_hash, p_response);
    END IF;
    RETURN p_response;
END
$$;

------------------------------------------------------------------------------------------
-- Outbox: every state change that someone outside may want to hear about (push messages to
-- the mini-program, merchant webhooks). Delivered later by a relay; no external call inside
-- a business transaction.
------------------------------------------------------------------------------------------
CREATE TABLE outbox (
    id            bigserial PRIMARY KEY,
    topic         text NOT NULL,
    person_id     bigint,
    payload       jsonb NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    delivered_at  timestamptz
);
CREATE INDEX outbox_pending ON outbox (id) WHERE delivered_at IS NULL;

CREATE FUNCTION gp_outbox(p_topic text, p_person bigint, p_payload jsonb) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO outbox (topic, person_id, payload) VALUES (p_topic, p_person, p_payload)
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
