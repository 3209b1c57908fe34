-- tests/sql/test_tasks.sql
-- Tests of the work loop (sql/functions/40_tasks.sql, tables in sql/migrations/0004_tasks.sql)
-- against a database migrated by `gridpointsd migrate`.
--
--   psql -X -v ON_ERROR_STOP=1 -d <db> -U postgres -f tests/sql/test_tasks.sql
--
-- Run it as a superuser: it creates a scratch schema gp_test (helpers, and the dblink extension
-- that drives the race tests through parallel connections) and drops it at the end. Everything
-- else runs as gp_app, so the privileges of the migrations are tested too. The race tests
-- connect back to the same database as gp_app; the connection string is derived from the
-- current session (host/socket, port, database) unless -v race_conninfo='...' is given. When
-- dblink is not installed they are skipped with a warning. The script is plain autocommit
-- psql: the timer tests need real time to pass between statements (pg_sleep), and now() only
-- moves between transactions. Any failure raises an exception ("FAIL: ...") and stops psql with
-- a non-zero exit status. Takes about 15 seconds. The data it creates (a street with a
-- random-suffixed name, its people and tasks) stays behind; use a throwaway database.

\set ON_ERROR_STOP 1
SET client_min_messages = warning;
-- The API functions live in schema gp (sql/functions), as the server sees them.
SET search_path = gp, public;

------------------------------------------------------------------------------------------
-- Helpers (superuser), in a scratch schema
------------------------------------------------------------------------------------------
DROP SCHEMA IF EXISTS gp_test CASCADE;
CREATE SCHEMA gp_test;
GRANT USAGE ON SCHEMA gp_test TO gp_app;

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'dblink') THEN
        CREATE EXTENSION dblink SCHEMA gp_test;
    END IF;
EXCEPTION WHEN OTHERS THEN
    RAISE WARNING 'dblink is not available (%): the race tests will be skipped', SQLERRM;
END
$$;

\if :{?race_conninfo}
SELECT set_config('gp_test.conninfo', :'race_conninfo', false);
\endif
\if :{?race_conns}
SELECT set_config('gp_test.race_conns', :'race_conns', false);
\endif

-- Other test files insert fixtures with explicit ids; move the sequences past them so that
-- this file can run after them in the same database.
SELECT setval(pg_get_serial_sequence(t, 'id'), m)
  FROM (VALUES ('org_units', (SELECT max(id) FROM org_units)),
               ('persons', (SELECT max(id) FROM persons))) x (t, m)
 WHERE m IS NOT NULL AND m >= (SELECT last_value FROM pg_sequences
                                WHERE schemaname = 'public' AND sequencename = t || '_id_seq');

CREATE TABLE gp_test.ids (name text PRIMARY KEY, id bigint NOT NULL);
GRANT SELECT, INSERT, UPDATE ON gp_test.ids TO gp_app;

CREATE FUNCTION gp_test.set(p_name text, p_id bigint) RETURNS bigint LANGUAGE sql AS $$
    INSERT INTO gp_test.ids VALUES (p_name, p_id)
    ON CONFLICT (name) DO UPDATE SET id = EXCLUDED.id RETURNING id
$$;

CREATE FUNCTION gp_test.id(p_name text) RETURNS bigint LANGUAGE plpgsql STABLE AS $$
DECLARE
    v bigint;
BEGIN
    SELECT id INTO v FROM gp_test.ids WHERE name = p_name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'test bug: no id named %', p_name;
    END IF;
    RETURN v;
END
$$;

CREATE FUNCTION gp_test.ok(p_cond boolean, p_msg text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF p_cond IS NOT TRUE THEN
        RAISE EXCEPTION 'FAIL: %', p_msg;
    END IF;
END
$$;

CREATE FUNCTION gp_test.eq(p_got anyelement, p_want anyelement, p_msg text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF p_got IS DISTINCT FROM p_want THEN
        RAISE EXCEPTION 'FAIL: %: got %, want %', p_msg, p_got, p_want;
    END IF;
END
$$;

-- Runs a SELECT of one jsonb value: {"ok": true, "r": value} or {"ok": false, "code":
-- "GPnnn:machine_code" (or the SQLSTATE), "message"}.
CREATE FUNCTION gp_test.try(p_sql text) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v jsonb;
    v_state text;
    v_hint text;
    v_msg text;
BEGIN
    EXECUTE p_sql INTO v;
    RETURN jsonb_build_object('ok', true, 'r', v);
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_hint = PG_EXCEPTION_HINT,
                            v_msg = MESSAGE_TEXT;
    RETURN jsonb_build_object('ok', false, 'message', v_msg,
        'code', v_state || CASE WHEN v_state LIKE 'GP%' THEN ':' || v_hint ELSE '' END);
END
$$;

-- The value of a SELECT that must succeed.
CREATE FUNCTION gp_test.run(p_sql text) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    r jsonb := gp_test.try(p_sql);
BEGIN
    IF NOT (r ->> 'ok')::boolean THEN
        RAISE EXCEPTION 'FAIL: % raised % (%)', p_sql, r ->> 'code', r ->> 'message';
    END IF;
    RETURN r -> 'r';
END
$$;

-- A SELECT that must fail with p_code ("GP409:task_full").
CREATE FUNCTION gp_test.expect(p_sql text, p_code text) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    r jsonb := gp_test.try(p_sql);
BEGIN
    IF (r ->> 'ok')::boolean THEN
        RAISE EXCEPTION 'FAIL: % succeeded, want %: %', p_sql, p_code, r -> 'r';
    END IF;
    IF r ->> 'code' <> p_code THEN
        RAISE EXCEPTION 'FAIL: % raised % (%), want %', p_sql, r ->> 'code', r ->> 'message',
                        p_code;
    END IF;
END
$$;

CREATE FUNCTION gp_test.ts(p timestamptz) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT to_char(p AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
$$;

-- Publication arguments: a valid default task on p_unit, overridden by p_extra.
CREATE FUNCTION gp_test.task_args(p_unit bigint, p_extra jsonb) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('unit_id', p_unit, 'title', 'Check the fire exits',
                              'description', 'Every stairwell of buildings 3 to 5',
                              'category', 'safety', 'reward', 10, 'slots', 3,
                              'ends_at', gp_test.ts(now() + interval '1 hour'),
                              'claim_ttl_s', 3600, 'review_window_s', 3600)
           || coalesce(p_extra, '{}')
$$;

CREATE FUNCTION gp_test.publish(p_actor bigint, p_unit bigint, p_extra jsonb DEFAULT '{}')
RETURNS bigint LANGUAGE sql AS $$
    SELECT (gp_test.run(format('SELECT body FROM gp_task_publish(%s, %L)', p_actor,
                               gp_test.task_args(p_unit, p_extra))) ->> 'id')::bigint
$$;

CREATE FUNCTION gp_test.claim(p_worker bigint, p_task bigint) RETURNS bigint LANGUAGE sql AS $$
    SELECT (gp_test.run(format('SELECT body FROM gp_task_claim(%s, %s)', p_worker, p_task)) ->> 'id')::bigint
$$;

-- Report arguments for an assignment, made now unless p_extra says otherwise.
CREATE FUNCTION gp_test.report_args(p_assignment bigint, p_crid text, p_extra jsonb DEFAULT '{}')
RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('assignment_id', p_assignment, 'client_report_id', p_crid,
                              'made_at', gp_test.ts(now()), 'notes', 'done',
                              'evidence', jsonb_build_array(jsonb_build_object(
                                  'url', 'https://img.example/' || p_crid || '.jpg',
                                  'sha256', repeat('ab', 32))))
           || coalesce(p_extra, '{}')
$$;

CREATE FUNCTION gp_test.report(p_worker bigint, p_assignment bigint, p_crid text,
                               p_extra jsonb DEFAULT '{}') RETURNS jsonb LANGUAGE sql AS $$
    SELECT gp_test.run(format('SELECT body FROM gp_report_submit(%s, %L)', p_worker,
                              gp_test.report_args(p_assignment, p_crid, p_extra)))
$$;

CREATE FUNCTION gp_test.state(p_assignment bigint) RETURNS text LANGUAGE sql STABLE AS $$
    SELECT state FROM assignments WHERE id = p_assignment
$$;

-- The invariants of this file, over the tasks of the test street: counters = assignment
-- states (the row's occupied = claimed + submitted + approved and its final counters; the
-- per-state counts the task JSON shows, gp_task_counts); never more live/final assignments than slots; one award per approved assignment and
-- none for any other; the reservation holds exactly what is still owed, and nothing once
-- released; history and state agree.
CREATE FUNCTION gp_test.check_invariants() RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    r record;
BEGIN
    FOR r IN
        SELECT t.id, t.occupied, t.approved, t.rejected, t.released, t.expired,
               gp_task_counts(t) AS counts, x.*
          FROM tasks t
          JOIN org_units tu ON tu.id = t.unit_id
          CROSS JOIN LATERAL (
              SELECT count(*) FILTER (WHERE a.state = 'claimed') AS n_claimed,
                     count(*) FILTER (WHERE a.state = 'submitted') AS n_submitted,
                     count(*) FILTER (WHERE a.state = 'approved') AS n_approved,
                     count(*) FILTER (WHERE a.state = 'rejected') AS n_rejected,
                     count(*) FILTER (WHERE a.state = 'released') AS n_released,
                     count(*) FILTER (WHERE a.state = 'expired') AS n_expired
                FROM assignments a WHERE a.task_id = t.id) x
         WHERE tu.path <@ (SELECT path FROM org_units WHERE id = gp_test.id('street'))
    LOOP
        IF (r.occupied, r.approved, r.rejected, r.released, r.expired)
           <> (r.n_claimed + r.n_submitted + r.n_approved, r.n_approved, r.n_rejected,
               r.n_released, r.n_expired)
           OR r.counts <> jsonb_build_object('claimed', r.n_claimed, 'submitted', r.n_submitted,
                                             'approved', r.n_approved, 'rejected', r.n_rejected,
                                             'released', r.n_released, 'expired', r.n_expired)
        THEN
            RAISE EXCEPTION 'FAIL: task % counters % % do not match its assignments %', r.id,
                ROW(r.occupied, r.approved, r.rejected, r.released, r.expired), r.counts,
                ROW(r.n_claimed, r.n_submitted, r.n_approved, r.n_rejected, r.n_released,
                    r.n_expired);
        END IF;
    END LOOP;
    PERFORM gp_test.ok(NOT EXISTS (SELECT 1 FROM tasks WHERE occupied > slots),
                       'a task has more live or final assignments than slots');
    PERFORM gp_test.ok(NOT EXISTS (
        SELECT 1 FROM assignments a
         WHERE (SELECT count(*) FROM ledger_txns l
                 WHERE l.kind = 'award' AND l.refs ->> 'assignment_id' = a.id::text)
               <> CASE WHEN a.state = 'approved' THEN 1 ELSE 0 END
            OR (a.state = 'approved' AND NOT EXISTS (
                   SELECT 1 FROM ledger_txns l WHERE l.id = a.award_txn AND l.kind = 'award'
                      AND l.refs ->> 'assignment_id' = a.id::text))),
        'an approved assignment without exactly one award, or an award without approval');
    PERFORM gp_test.ok(NOT EXISTS (
        SELECT 1 FROM tasks t JOIN accounts ac ON ac.kind = 'reservation' AND ac.owner_id = t.id
         WHERE ac.balance <> CASE WHEN t.released_at IS NOT NULL THEN 0
                                  ELSE (t.slots - t.approved) * t.reward END),
        'a reservation does not hold what the task still owes');
    PERFORM gp_test.ok(NOT EXISTS (
        SELECT 1 FROM assignments a
         WHERE a.state IS DISTINCT FROM (SELECT e.to_state FROM assignment_events e
                                          WHERE e.assignment_id = a.id ORDER BY e.id DESC LIMIT 1)),
        'an assignment state differs from its last history event');
    PERFORM gp_test.eq(gp_ledger_check(), '[]'::jsonb, 'gp_ledger_check()');
END
$$;

-- Race driver (superuser: dblink). Runs each SELECT of p_sqls (each returning one jsonb) on
-- up to p_conns parallel connections as gp_app, all of a round at once; returns, in order,
-- gp_test.try()'s result for each.
CREATE FUNCTION gp_test.conninfo() RETURNS text LANGUAGE sql STABLE AS $$
    SELECT coalesce(nullif(current_setting('gp_test.conninfo', true), ''),
        format('dbname=%s user=gp_app options=-csearch_path=gp,public port=%s host=%s',
               current_database(),
               current_setting('port'),
               coalesce(host(inet_server_addr()),
                        btrim(split_part(current_setting('unix_socket_directories'), ',', 1)))))
$$;

CREATE FUNCTION gp_test.have_dblink() RETURNS boolean LANGUAGE sql STABLE AS $$
    SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'dblink')
$$;

CREATE FUNCTION gp_test.race(p_sqls text[], p_conns int) RETURNS jsonb[] LANGUAGE plpgsql AS $$
DECLARE
    v_n int := cardinality(p_sqls);
    v_conns int := least(p_conns, v_n);
    v_out jsonb[] := '{}';
    v_res text;
    i int;
    k int := 1;
    v_batch int;
BEGIN
    FOR i IN 1 .. v_conns LOOP
        PERFORM dblink_connect('gpr' || i, gp_test.conninfo());
    END LOOP;
    WHILE k <= v_n LOOP
        v_batch := least(v_conns, v_n - k + 1);
        FOR i IN 1 .. v_batch LOOP
            PERFORM dblink_send_query('gpr' || i,
                format('SELECT gp_test.try(%L)::text', p_sqls[k + i - 1]));
        END LOOP;
        FOR i IN 1 .. v_batch LOOP
            SELECT r INTO v_res FROM dblink_get_result('gpr' || i) AS x (r text);
            v_out := v_out || v_res::jsonb;
            PERFORM * FROM dblink_get_result('gpr' || i) AS x (r text);
        END LOOP;
        k := k + v_batch;
    END LOOP;
    FOR i IN 1 .. v_conns LOOP
        PERFORM dblink_disconnect('gpr' || i);
    END LOOP;
    RETURN v_out;
END
$$;

-- How many parallel connections the race tests may open here.
-- (-v race_conns=N asks for N, still within max_connections.)
CREATE FUNCTION gp_test.max_conns() RETURNS int LANGUAGE sql STABLE AS $$
    SELECT greatest(2, least(coalesce(nullif(current_setting('gp_test.race_conns', true), '')::int,
                                      50),
                             current_setting('max_connections')::int
                             - (SELECT count(*) FROM pg_stat_activity)::int - 10))
$$;

GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA gp_test TO gp_app;
SET search_path = gp, public, gp_test;
SET ROLE gp_app;

------------------------------------------------------------------------------------------
-- 1. Fixture: street S > community C1 > grid G1 > micro-grid M1, and C2 > G2; people; budget.
------------------------------------------------------------------------------------------
DO $$
DECLARE
    v_run text := lpad((floor(random() * 10000))::int::text, 4, '0');
    v_s bigint; v_c1 bigint; v_g1 bigint; v_m1 bigint; v_c2 bigint; v_g2 bigint;
    v_phone int := 0;
    p bigint;
    i int;
BEGIN
    INSERT INTO org_units (level, name) VALUES ('street', 'test street ' || v_run || '-' ||
                                                txid_current()) RETURNING id INTO v_s;
    INSERT INTO org_units (parent_id, level, name) VALUES (v_s, 'community', 'C1') RETURNING id INTO v_c1;
    INSERT INTO org_units (parent_id, level, name) VALUES (v_c1, 'grid', 'G1') RETURNING id INTO v_g1;
    INSERT INTO org_units (parent_id, level, name) VALUES (v_g1, 'micro_grid', 'M1') RETURNING id INTO v_m1;
    INSERT INTO org_units (parent_id, level, name) VALUES (v_s, 'community', 'C2') RETURNING id INTO v_c2;
    INSERT INTO org_units (parent_id, level, name) VALUES (v_c2, 'grid', 'G2') RETURNING id INTO v_g2;
    PERFORM gp_test.set('street', v_s), gp_test.set('c1', v_c1), gp_test.set('g1', v_g1),
            gp_test.set('m1', v_m1), gp_test.set('c2', v_c2), gp_test.set('g2', v_g2);

    -- name, home unit, tags, role, role unit
    DECLARE
        r record;
    BEGIN
        FOR r IN SELECT * FROM (VALUES
                ('admin',   v_s,  '{}'::text[],          'street_admin', v_s),
                ('gstaff',  v_g1, '{}',                  'grid_staff',   v_g1),
                ('gstaff2', v_g2, '{}',                  'grid_staff',   v_g2),
                ('auditor', v_s,  '{}',                  'auditor',      v_s),
                ('w1',      v_m1, '{first_aid,mediator}', 'worker',      v_m1),
                ('w2',      v_g1, '{}',                  'worker',       v_g1),
                ('w3',      v_g2, '{first_aid}',         'worker',       v_g2),
                ('vol',     v_m1, '{}',                  'volunteer',    v_m1),
                ('nobody',  v_m1, '{first_aid}',         NULL,           NULL)) x
                (name, unit, tags, role, role_unit)
        LOOP
            v_phone := v_phone + 1;
            INSERT INTO persons (phone, name, unit_id, tags, password_hash)
            VALUES ('19' || v_run || lpad(v_phone::text, 5, '0'), r.name, r.unit, r.tags, 'x')
            RETURNING id INTO p;
            PERFORM gp_test.set(r.name, p);
            IF r.role IS NOT NULL THEN
                INSERT INTO role_grants (person_id, role, unit_id) VALUES (p, r.role, r.role_unit);
            END IF;
        END LOOP;
    END;
    -- gstaff also works (to test own_task and self_approval).
    INSERT INTO role_grants (person_id, role, unit_id) VALUES (gp_test.id('gstaff'), 'worker', v_g1);
    -- 200 workers in G1 for the claim storm.
    FOR i IN 1 .. 200 LOOP
        INSERT INTO persons (phone, name, unit_id, password_hash)
        VALUES ('19' || v_run || lpad((1000 + i)::text, 5, '0'), 'racer ' || i, v_g1, 'x')
        RETURNING id INTO p;
        INSERT INTO role_grants (person_id, role, unit_id) VALUES (p, 'worker', v_g1);
        PERFORM gp_test.set('racer' || i, p);
    END LOOP;
    -- Budget: issue to the street, grant part of it to G1.
    PERFORM gp_issue(gp_test.id('admin'), v_s, 100000000, 'test budget');
    PERFORM gp_grant(gp_test.id('admin'), v_s, v_g1, 10000000, 'test budget');
END
$$;

------------------------------------------------------------------------------------------
-- 2. Publication: meaning of every field, scope, budget, idempotency
------------------------------------------------------------------------------------------
DO $$
DECLARE
    gs bigint := gp_test.id('gstaff');
    g1 bigint := gp_test.id('g1');
    v_sql text := 'SELECT body FROM gp_task_publish(%s, %L)';
    n_before bigint;
    r jsonb;
    r2 jsonb;
    v_task bigint;
    v_bal bigint;
BEGIN
    PERFORM gp_test.expect(format(v_sql, gs, gp_test.task_args(g1, '{}') - 'title'),
                           'GP400:missing_field');
    PERFORM gp_test.expect(format(v_sql, gs, gp_test.task_args(g1, '{"title": "  "}')),
                           'GP400:invalid_length');
    PERFORM gp_test.expect(format(v_sql, gs, gp_test.task_args(g1, '{"reward": 0}')),
                           'GP400:out_of_range');
    PERFORM gp_test.expect(format(v_sql, gs, gp_test.task_args(g1, '{"reward": -5}')),
                           'GP400:out_of_range');
    PERFORM gp_test.expect(format(v_sql, gs, gp_test.task_args(g1, '{"reward": "10"}')),
                           'GP400:invalid_type');
    PERFORM gp_test.expect(format(v_sql, gs, gp_test.task_args(g1, '{"reward": 1.5}')),
                           'GP400:invalid_type');
    PERFORM gp_test.expect(format(v_sql, gs, gp_test.task_args(g1, '{"slots": 0}')),
                           'GP400:out_of_range');
    PERFORM gp_test.expect(format(v_sql, gs, gp_test.task_args(g1, '{"slots": 10001}')),
                           'GP400:out_of_range');
    PERFORM gp_test.expect(format(v_sql, gs, gp_test.task_args(g1,
                           '{"slots": 10000, "reward": 9223372036854775807}')),
                           'GP400:amount_overflow');
    PERFORM gp_test.expect(format(v_sql, gs, gp_test.task_args(g1,
                           jsonb_build_object('starts_at', gp_test.ts(now() + interval '2 hours')))),
                           'GP400:invalid_window');
    PERFORM gp_test.expect(format(v_sql, gs, gp_test.task_args(g1,
                           jsonb_build_object('starts_at', gp_test.ts(now() - interval '2 hours'),
                                              'ends_at', gp_test.ts(now() - interval '1 hour')))),
                           'GP400:invalid_window');
    PERFORM gp_test.expect(format(v_sql, gs, gp_test.task_args(g1,
                           '{"ends_at": "2030-13-01T00:00:00Z"}')), 'GP400:invalid_timestamp');
    PERFORM gp_test.expect(format(v_sql, gs, gp_test.task_args(g1,
                           '{"ends_at": "2030-01-01T00:00:00"}')), 'GP400:invalid_timestamp');
    PERFORM gp_test.expect(format(v_sql, gs, gp_test.task_args(g1,
                           '{"ends_at": "tomorrow"}')), 'GP400:invalid_timestamp');
    PERFORM gp_test.expect(format(v_sql, gs, gp_test.task_args(g1, '{"lat": 91, "lng": 0}')),
                           'GP400:out_of_range');
    PERFORM gp_test.expect(format(v_sql, gs, gp_test.task_args(g1, '{"lat": 30.6}')),
                           'GP400:invalid_place');
    PERFORM gp_test.expect(format(v_sql, gs, gp_test.task_args(g1, '{"geofence_m": 100}')),
                           'GP400:invalid_geofence');
    PERFORM gp_test.expect(format(v_sql, gs, gp_test.task_args(g1,
                           '{"lat": 30.6, "lng": 104.0, "geofence_m": 5}')), 'GP400:out_of_range');
    PERFORM gp_test.expect(format(v_sql, gs, gp_test.task_args(g1,
                           '{"lat": 30.6, "lng": 104.0, "geofence_enforced": true}')),
                           'GP400:invalid_geofence');
    PERFORM gp_test.expect(format(v_sql, gs, gp_test.task_args(g1, '{"claim_ttl_s": 0}')),
                           'GP400:out_of_range');
    PERFORM gp_test.expect(format(v_sql, gs, gp_test.task_args(g1, '{"review_window_s": 2592001}')),
                           'GP400:out_of_range');
    PERFORM gp_test.expect(format(v_sql, gs, gp_test.task_args(g1, '{"required_tags": "x"}')),
                           'GP400:invalid_tags');
    PERFORM gp_test.expect(format(v_sql, gs, gp_test.task_args(g1, '{"publisher_id": 1}')),
                           'GP400:unknown_field');
    PERFORM gp_test.expect(format(v_sql, gs, '[1, 2]'), 'GP400:invalid_body');

    -- Scope: grid staff of G1 cannot publish on G2 or on the street; a worker cannot publish.
    PERFORM gp_test.expect(format(v_sql, gs, gp_test.task_args(gp_test.id('g2'), '{}')),
                           'GP404:unit_not_found');
    PERFORM gp_test.expect(format(v_sql, gs, gp_test.task_args(gp_test.id('street'), '{}')),
                           'GP404:unit_not_found');
    PERFORM gp_test.expect(format(v_sql, gp_test.id('w1'), gp_test.task_args(gp_test.id('m1'), '{}')),
                           'GP404:unit_not_found');
    PERFORM gp_test.expect(format(v_sql, gp_test.id('auditor'),
                                  gp_test.task_args(gp_test.id('street'), '{}')),
                           'GP404:unit_not_found');

    -- Budget: M1 has none -> 402 and nothing is created.
    SELECT count(*) INTO n_before FROM tasks;
    PERFORM gp_test.expect(format(v_sql, gs, gp_test.task_args(gp_test.id('m1'), '{}')),
                           'GP402:insufficient_budget');
    PERFORM gp_test.eq((SELECT count(*) FROM tasks), n_before, 'no task after a 402');

    -- A valid publication reserves slots x reward.
    SELECT balance INTO v_bal FROM accounts WHERE kind = 'budget' AND owner_id = g1;
    r := gp_test.run(format(v_sql, gs, gp_test.task_args(g1,
             '{"slots": 4, "reward": 25, "required_tags": ["first_aid", "first_aid"]}')));
    v_task := (r ->> 'id')::bigint;
    PERFORM gp_test.eq(r ->> 'status', 'open', 'published task is open');
    PERFORM gp_test.eq(r -> 'required_tags', '["first_aid"]'::jsonb, 'tags deduplicated');
    PERFORM gp_test.eq(r -> 'gate', jsonb_build_object('task_id', v_task, 'unit_id', g1,
                                                       'free_slots', 4,
                                                       'slots_version', (r ->> 'version')::int),
                       'gate of a new task (with its unit: the gate answers only callers in scope)');
    PERFORM gp_test.ok(r -> 'receipt' ->> 'txn_id' IS NOT NULL, 'publication receipt');
    PERFORM gp_test.eq((SELECT balance FROM accounts WHERE kind = 'budget' AND owner_id = g1),
                       v_bal - 100, 'budget debited by slots x reward');
    PERFORM gp_test.eq((SELECT balance FROM accounts WHERE kind = 'reservation' AND owner_id = v_task),
                       100::bigint, 'reservation credited');
    PERFORM gp_test.ok(EXISTS (SELECT 1 FROM audit_log WHERE action = 'task.publish'
                                                        AND object_id = v_task::text),
                       'publication audited');
    PERFORM gp_test.ok(EXISTS (SELECT 1 FROM outbox WHERE topic = 'task.published'
                                                     AND (payload ->> 'task_id')::bigint = v_task),
                       'publication in the outbox');
    PERFORM gp_test.ok(EXISTS (SELECT 1 FROM task_events WHERE task_id = v_task
                                                          AND event = 'published'),
                       'publication in the history');

    -- Idempotent publication: same key and body -> same task, replayed; other body -> 422.
    r := gp_test.run(format('SELECT body FROM gp_task_publish(%s, %L, %L, %L, %L)', gs,
                            gp_test.task_args(g1, '{"title": "idem"}'), 'person:' || gs,
                            'pub-key-1', 'hash-A'));
    r2 := gp_test.run(format('SELECT body FROM gp_task_publish(%s, %L, %L, %L, %L)', gs,
                             gp_test.task_args(g1, '{"title": "idem"}'), 'person:' || gs,
                             'pub-key-1', 'hash-A'));
    PERFORM gp_test.eq(r2 ->> 'id', r ->> 'id', 'idempotent publish returns the same task');
    PERFORM gp_test.eq(r2 ->> 'idempotent_replay', 'true', 'replay is marked');
    PERFORM gp_test.eq((SELECT count(*) FROM tasks WHERE title = 'idem'
                                                    AND unit_id = g1), 1::bigint,
                       'one task for one key');
    PERFORM gp_test.expect(format('SELECT body FROM gp_task_publish(%s, %L, %L, %L, %L)', gs,
                                  gp_test.task_args(g1, '{"title": "idem2"}'), 'person:' || gs,
                                  'pub-key-1', 'hash-B'), 'GP422:idempotency_key_reused');
    PERFORM gp_test.set('t_tags', v_task);
END
$$;

------------------------------------------------------------------------------------------
-- 3. Visibility and scope
------------------------------------------------------------------------------------------
DO $$
DECLARE
    t bigint := gp_test.id('t_tags');   -- on G1, requires first_aid, 4 slots
    r jsonb;
BEGIN
    -- w1 (M1, has first_aid) sees it in the list; w2 (G1, no tag) does not, but may open it.
    r := gp_test.run(format('SELECT gp_task_list(%s, %L)', gp_test.id('w1'), '{}'));
    PERFORM gp_test.ok(r -> 'items' @> jsonb_build_array(jsonb_build_object('id', t)),
                       'w1 lists the task');
    PERFORM gp_test.ok(NOT (r -> 'items' -> 0 ? 'reservation_txn'), 'worker view hides ledger refs');
    r := gp_test.run(format('SELECT gp_task_list(%s, %L)', gp_test.id('w2'), '{}'));
    PERFORM gp_test.ok(NOT (r -> 'items' @> jsonb_build_array(jsonb_build_object('id', t))),
                       'w2 (missing tag) does not list the task');
    r := gp_test.run(format('SELECT gp_task_get(%s, %s)', gp_test.id('w2'), t));
    PERFORM gp_test.eq(r -> 'missing_tags', '["first_aid"]'::jsonb, 'missing_tags shown');
    PERFORM gp_test.eq(r ->> 'can_claim', 'false', 'w2 cannot claim');
    PERFORM gp_test.expect(format('SELECT body FROM gp_task_claim(%s, %s)', gp_test.id('w2'), t),
                           'GP403:missing_tags');
    -- w3 lives in G2: the task does not exist for them.
    PERFORM gp_test.expect(format('SELECT gp_task_get(%s, %s)', gp_test.id('w3'), t),
                           'GP404:task_not_found');
    PERFORM gp_test.expect(format('SELECT body FROM gp_task_claim(%s, %s)', gp_test.id('w3'), t),
                           'GP404:task_not_found');
    -- A person without a worker role in the area, and an unknown task.
    PERFORM gp_test.expect(format('SELECT body FROM gp_task_claim(%s, %s)', gp_test.id('nobody'), t),
                           'GP404:task_not_found');
    PERFORM gp_test.expect(format('SELECT gp_task_list(%s, %L)', gp_test.id('nobody'), '{}'),
                           'GP403:not_a_worker');
    PERFORM gp_test.expect(format('SELECT gp_task_get(%s, %s)', gp_test.id('w1'), -1),
                           'GP404:task_not_found');
    PERFORM gp_test.expect(format('SELECT gp_task_slots(%s)', -1), 'GP404:task_not_found');
    -- Staff of another grid: 404 on everything.
    PERFORM gp_test.expect(format('SELECT gp_task_get(%s, %s)', gp_test.id('gstaff2'), t),
                           'GP404:task_not_found');
    PERFORM gp_test.expect(format('SELECT body FROM gp_task_update(%s, %s, %L)', gp_test.id('gstaff2'), t,
                                  '{"title": "x"}'), 'GP404:task_not_found');
    PERFORM gp_test.expect(format('SELECT body FROM gp_task_cancel(%s, %s, %L)', gp_test.id('gstaff2'), t,
                                  'x'), 'GP404:task_not_found');
    PERFORM gp_test.expect(format('SELECT gp_task_history(%s, %s)', gp_test.id('gstaff2'), t),
                           'GP404:task_not_found');
    PERFORM gp_test.expect(format('SELECT gp_task_list(%s, %L)', gp_test.id('gstaff2'),
                                  jsonb_build_object('unit_id', gp_test.id('g1'))),
                           'GP404:unit_not_found');
    r := gp_test.run(format('SELECT gp_task_list(%s, %L)', gp_test.id('gstaff2'), '{}'));
    PERFORM gp_test.ok(NOT (r -> 'items' @> jsonb_build_array(jsonb_build_object('id', t))),
                       'gstaff2 does not list a G1 task');
    -- Staff above, and the auditor, see the full record.
    r := gp_test.run(format('SELECT gp_task_get(%s, %s)', gp_test.id('admin'), t));
    PERFORM gp_test.ok(r ? 'reservation_txn', 'admin sees the staff view');
    r := gp_test.run(format('SELECT gp_task_get(%s, %s)', gp_test.id('auditor'), t));
    PERFORM gp_test.ok(r ? 'reservation_txn', 'auditor sees the staff view');
    r := gp_test.run(format('SELECT gp_task_list(%s, %L)', gp_test.id('auditor'),
                            jsonb_build_object('unit_id', gp_test.id('c1'))));
    PERFORM gp_test.ok(r -> 'items' @> jsonb_build_array(jsonb_build_object('id', t)),
                       'auditor lists tasks of a subtree');
    -- But the auditor cannot change anything.
    PERFORM gp_test.expect(format('SELECT body FROM gp_task_cancel(%s, %s, %L)', gp_test.id('auditor'), t,
                                  'x'), 'GP404:task_not_found');
    PERFORM gp_test.expect(format('SELECT gp_task_list(%s, %L)', gp_test.id('w1'),
                                  '{"view": "staff"}'), 'GP403:not_staff');
    -- The publisher may not claim their own task.
    PERFORM gp_test.expect(format('SELECT body FROM gp_task_claim(%s, %s)', gp_test.id('gstaff'),
                                  gp_test.publish(gp_test.id('gstaff'), gp_test.id('g1'))),
                           'GP403:own_task');
END
$$;

------------------------------------------------------------------------------------------
-- 4. The assignment state machine: claim, release, submit, decide
------------------------------------------------------------------------------------------
DO $$
DECLARE
    t bigint := gp_test.id('t_tags');
    w1 bigint := gp_test.id('w1');
    gs bigint := gp_test.id('gstaff');
    a bigint;
    a2 bigint;
    r jsonb;
    v_ver bigint;
    t2 bigint;
    t3 bigint;
BEGIN
    r := gp_test.run(format('SELECT body FROM gp_task_claim(%s, %s)', w1, t));
    a := (r ->> 'id')::bigint;
    PERFORM gp_test.eq(r ->> 'state', 'claimed', 'claim -> claimed');
    PERFORM gp_test.eq((r -> 'gate' ->> 'free_slots')::int, 3, 'claim takes a slot');
    v_ver := (r -> 'gate' ->> 'slots_version')::bigint;
    PERFORM gp_test.eq(gp_task_slots(t), r -> 'gate', 'gp_task_slots agrees with the claim');
    PERFORM gp_test.eq((r ->> 'due_at')::timestamptz,
                       least((r ->> 'claimed_at')::timestamptz + interval '1 hour',
                             (SELECT ends_at FROM tasks WHERE id = t)),
                       'due_at = least(claimed_at + claim_ttl, ends_at)');
    PERFORM gp_test.expect(format('SELECT body FROM gp_task_claim(%s, %s)', w1, t), 'GP409:already_claimed');
    -- Idempotent claim with a key: replayed, no second assignment.
    -- Release: the slot comes back; releasing again replays.
    r := gp_test.run(format('SELECT body FROM gp_assignment_release(%s, %s)', w1, a));
    PERFORM gp_test.eq(r ->> 'state', 'released', 'release -> released');
    PERFORM gp_test.eq((r -> 'gate' ->> 'free_slots')::int, 4, 'release frees the slot');
    PERFORM gp_test.ok((r -> 'gate' ->> 'slots_version')::bigint > v_ver, 'slots_version grows');
    r := gp_test.run(format('SELECT body FROM gp_assignment_release(%s, %s)', w1, a));
    PERFORM gp_test.eq(r ->> 'idempotent_replay', 'true', 'second release replays');
    PERFORM gp_test.expect(format('SELECT body FROM gp_assignment_release(%s, %s)', gp_test.id('w2'), a),
                           'GP404:assignment_not_found');
    -- A report on a released claim is refused.
    PERFORM gp_test.expect(format('SELECT body FROM gp_report_submit(%s, %L)', w1,
                                  gp_test.report_args(a, 'rel-1')), 'GP409:assignment_released');
    -- After a release the worker may claim again.
    r := gp_test.run(format('SELECT body FROM gp_task_claim(%s, %s, %L, %L, %L)', w1, t, 'person:' || w1,
                            'claim-key-1', 'h'));
    a2 := (r ->> 'id')::bigint;
    PERFORM gp_test.ok(a2 <> a, 'a new assignment after release');
    PERFORM gp_test.eq(gp_test.run(format('SELECT body FROM gp_task_claim(%s, %s, %L, %L, %L)', w1, t,
                                          'person:' || w1, 'claim-key-1', 'h')) ->> 'id',
                       a2::text, 'an idempotent claim replays');
    -- Submit, then decide.
    r := gp_test.report(w1, a2, 'sm-1');
    PERFORM gp_test.eq(r -> 'assignment' ->> 'state', 'submitted', 'report -> submitted');
    PERFORM gp_test.ok((r -> 'assignment' ->> 'review_due_at')::timestamptz
                       = (r -> 'assignment' ->> 'submitted_at')::timestamptz + interval '1 hour',
                       'review_due_at = submitted_at + review_window');
    PERFORM gp_test.expect(format('SELECT body FROM gp_report_submit(%s, %L)', w1,
                                  gp_test.report_args(a2, 'sm-2')), 'GP409:already_submitted');
    PERFORM gp_test.expect(format('SELECT body FROM gp_assignment_release(%s, %s)', w1, a2),
                           'GP409:assignment_not_live');
    -- Review queue: gstaff sees it, gstaff2 does not.
    r := gp_test.run(format('SELECT gp_review_queue(%s, %L)', gs, '{}'));
    PERFORM gp_test.ok(r -> 'items' @> jsonb_build_array(jsonb_build_object('id', a2)),
                       'in the review queue');
    r := gp_test.run(format('SELECT gp_review_queue(%s, %L)', gp_test.id('gstaff2'), '{}'));
    PERFORM gp_test.ok(NOT (r -> 'items' @> jsonb_build_array(jsonb_build_object('id', a2))),
                       'not in another grid''s queue');
    PERFORM gp_test.expect(format('SELECT gp_review_queue(%s, %L)', w1, '{}'),
                           'GP403:not_staff');
    PERFORM gp_test.expect(format('SELECT body FROM gp_report_decide(%s, %s, true, NULL)',
                                  gp_test.id('gstaff2'), a2), 'GP404:assignment_not_found');
    PERFORM gp_test.expect(format('SELECT body FROM gp_report_decide(%s, %s, true, NULL)', w1, a2),
                           'GP404:assignment_not_found');
    PERFORM gp_test.expect(format('SELECT body FROM gp_report_decide(%s, %s, true, NULL)',
                                  gp_test.id('auditor'), a2), 'GP404:assignment_not_found');
    r := gp_test.run(format('SELECT body FROM gp_report_decide(%s, %s, true, %L)', gs, a2, 'well done'));
    PERFORM gp_test.eq(r ->> 'state', 'approved', 'approve -> approved');
    PERFORM gp_test.ok(r -> 'receipt' ->> 'txn_id' IS NOT NULL
                       AND r -> 'receipt' ->> 'txn_id' = r ->> 'award_txn', 'approval receipt');
    PERFORM gp_test.eq((r -> 'award' ->> 'worker_id')::bigint, w1, 'award to the worker');
    PERFORM gp_test.eq((r ->> 'decided_by')::bigint, gs, 'decided_by');
    PERFORM gp_test.expect(format('SELECT body FROM gp_report_decide(%s, %s, true, NULL)', gs, a2),
                           'GP409:already_approved');
    PERFORM gp_test.expect(format('SELECT body FROM gp_report_decide(%s, %s, false, %L)', gs, a2, 'no'),
                           'GP409:already_approved');
    PERFORM gp_test.expect(format('SELECT body FROM gp_task_claim(%s, %s)', w1, t), 'GP409:already_claimed');
    PERFORM gp_test.ok(EXISTS (SELECT 1 FROM audit_log WHERE action = 'report.approve'
                                                        AND object_id = a2::text),
                       'approval audited');

    -- Self-approval and rejection: gstaff (also a worker) claims a task of the admin.
    t2 := gp_test.publish(gp_test.id('admin'), gp_test.id('g1'), '{"slots": 2}');
    a := gp_test.claim(gs, t2);
    PERFORM gp_test.report(gs, a, 'self-1');
    PERFORM gp_test.expect(format('SELECT body FROM gp_report_decide(%s, %s, true, NULL)', gs, a),
                           'GP403:self_approval');
    PERFORM gp_test.ok(NOT (gp_test.run(format('SELECT gp_review_queue(%s, %L)', gs,
                            jsonb_build_object('task_id', t2))) -> 'items' -> 0 ->> 'can_decide')::boolean,
                       'can_decide false on one''s own report');
    PERFORM gp_test.expect(format('SELECT body FROM gp_report_decide(%s, %s, false, NULL)',
                                  gp_test.id('admin'), a), 'GP400:reason_required');
    PERFORM gp_test.expect(format('SELECT body FROM gp_report_decide(%s, %s, false, %L)',
                                  gp_test.id('admin'), a, '   '), 'GP400:invalid_length');
    r := gp_test.run(format('SELECT body FROM gp_report_decide(%s, %s, false, %L)', gp_test.id('admin'), a,
                            'photos do not show the exits'));
    PERFORM gp_test.eq(r ->> 'state', 'rejected', 'reject -> rejected');
    PERFORM gp_test.eq(r ->> 'reason', 'photos do not show the exits', 'rejection reason kept');
    PERFORM gp_test.eq((r -> 'gate' ->> 'free_slots')::int, 2, 'a rejection frees the slot');
    PERFORM gp_test.ok(r -> 'receipt' = 'null'::jsonb, 'no receipt for a rejection');
    PERFORM gp_test.expect(format('SELECT body FROM gp_task_claim(%s, %s)', gs, t2), 'GP409:already_claimed');

    -- task_full and task_not_open.
    t3 := gp_test.publish(gs, gp_test.id('g1'), '{"slots": 1}');
    PERFORM gp_test.claim(w1, t3);
    PERFORM gp_test.expect(format('SELECT body FROM gp_task_claim(%s, %s)', gp_test.id('vol'), t3),
                           'GP409:task_full');
    PERFORM gp_test.eq(gp_task_slots(t3) ->> 'free_slots', '0', 'full task has no free slot');
    t3 := gp_test.publish(gs, gp_test.id('g1'), jsonb_build_object(
              'starts_at', gp_test.ts(now() + interval '1 hour'),
              'ends_at', gp_test.ts(now() + interval '2 hours')));
    PERFORM gp_test.expect(format('SELECT body FROM gp_task_claim(%s, %s)', gp_test.id('vol'), t3),
                           'GP409:task_not_open');
    PERFORM gp_test.set('t_future', t3);
    -- A volunteer can claim like a worker.
    PERFORM gp_test.claim(gp_test.id('vol'), gp_test.publish(gs, gp_test.id('g1')));
END
$$;

------------------------------------------------------------------------------------------
-- 5. Editing and cancelling
------------------------------------------------------------------------------------------
DO $$
DECLARE
    gs bigint := gp_test.id('gstaff');
    t bigint := gp_test.id('t_future');   -- 3 slots x 10, nobody claimed
    r jsonb;
    v_bal bigint;
    v_ver bigint;
BEGIN
    SELECT balance INTO v_bal FROM accounts WHERE kind = 'budget' AND owner_id = gp_test.id('g1');
    r := gp_test.run(format('SELECT body FROM gp_task_update(%s, %s, %L)', gs, t, '{"title": "Renamed"}'));
    PERFORM gp_test.eq(r ->> 'title', 'Renamed', 'title edited');
    PERFORM gp_test.ok(r -> 'receipt' = 'null'::jsonb, 'no ledger change for a title');
    v_ver := (r ->> 'version')::bigint;
    r := gp_test.run(format('SELECT body FROM gp_task_update(%s, %s, %L)', gs, t,
                            jsonb_build_object('slots', 5, 'version', v_ver)));
    PERFORM gp_test.ok(r -> 'receipt' ->> 'txn_id' IS NOT NULL, 'more slots reserve more');
    PERFORM gp_test.eq((SELECT balance FROM accounts WHERE kind = 'budget'
                                                      AND owner_id = gp_test.id('g1')),
                       v_bal - 20, 'two more slots x 10 reserved');
    PERFORM gp_test.eq((r -> 'gate' ->> 'free_slots')::int, 5, 'gate follows the slots');
    r := gp_test.run(format('SELECT body FROM gp_task_update(%s, %s, %L)', gs, t, '{"reward": 4}'));
    PERFORM gp_test.eq((SELECT balance FROM accounts WHERE kind = 'reservation' AND owner_id = t),
                       20::bigint, 'a lower reward releases the difference');
    PERFORM gp_test.expect(format('SELECT body FROM gp_task_update(%s, %s, %L)', gs, t,
                                  jsonb_build_object('title', 'x', 'version', v_ver)),
                           'GP409:version_conflict');
    PERFORM gp_test.expect(format('SELECT body FROM gp_task_update(%s, %s, %L)', gs, t,
                                  jsonb_build_object('unit_id', gp_test.id('m1'))),
                           'GP400:field_not_editable');
    PERFORM gp_test.expect(format('SELECT body FROM gp_task_update(%s, %s, %L)', gs, t,
                                  '{"reward": 100000000000}'), 'GP402:insufficient_budget');
    PERFORM gp_test.expect(format('SELECT body FROM gp_task_update(%s, %s, %L)', gs, t,
                                  '{"ends_at": "2001-01-01T00:00:00Z"}'), 'GP400:invalid_window');
    PERFORM gp_test.expect(format('SELECT body FROM gp_task_update(%s, %s, %L)', gs, gp_test.id('t_tags'),
                                  '{"title": "x"}'), 'GP409:task_claimed');
    -- Cancel: reason required; nothing claimed, so the reservation comes back at once.
    PERFORM gp_test.expect(format('SELECT body FROM gp_task_cancel(%s, %s, NULL)', gs, t),
                           'GP400:reason_required');
    r := gp_test.run(format('SELECT body FROM gp_task_cancel(%s, %s, %L)', gs, t, 'weather'));
    PERFORM gp_test.eq(r ->> 'status', 'cancelled', 'cancel -> cancelled');
    PERFORM gp_test.ok(r -> 'receipt' ->> 'release_txn' IS NOT NULL, 'cancel releases at once');
    PERFORM gp_test.eq((r -> 'gate' ->> 'free_slots')::int, 0, 'no free slot once cancelled');
    PERFORM gp_test.eq((SELECT balance FROM accounts WHERE kind = 'reservation' AND owner_id = t),
                       0::bigint, 'reservation emptied');
    PERFORM gp_test.expect(format('SELECT body FROM gp_task_cancel(%s, %s, %L)', gs, t, 'again'),
                           'GP409:task_not_open');
    PERFORM gp_test.expect(format('SELECT body FROM gp_task_claim(%s, %s)', gp_test.id('w1'), t),
                           'GP409:task_not_open');
    PERFORM gp_test.expect(format('SELECT body FROM gp_task_update(%s, %s, %L)', gs, t, '{"title": "x"}'),
                           'GP409:task_not_open');
    PERFORM gp_test.ok(EXISTS (SELECT 1 FROM audit_log WHERE action = 'task.cancel'
                                                        AND object_id = t::text),
                       'cancel audited');
END
$$;

------------------------------------------------------------------------------------------
-- 6. Reports: exactly once, validation, geofence, check-ins
------------------------------------------------------------------------------------------
DO $$
DECLARE
    gs bigint := gp_test.id('gstaff');
    g1 bigint := gp_test.id('g1');
    w1 bigint := gp_test.id('w1');
    vol bigint := gp_test.id('vol');
    t bigint;
    a bigint;
    r jsonb;
    r2 jsonb;
    v_args jsonb;
BEGIN
    t := gp_test.publish(gs, g1, '{"slots": 5}');
    a := gp_test.claim(w1, t);
    v_args := gp_test.report_args(a, 'idem-report-1', '{"device_id": "phone-A"}');
    r := gp_test.run(format('SELECT body FROM gp_report_submit(%s, %L)', w1, v_args));
    r2 := gp_test.run(format('SELECT body FROM gp_report_submit(%s, %L)', w1, v_args));
    PERFORM gp_test.eq(r2 - 'idempotent_replay', r, 'a retry returns the stored response');
    PERFORM gp_test.eq(r2 ->> 'idempotent_replay', 'true', 'and says it is a replay');
    -- The same report from another device, after the decision too: still the same response.
    PERFORM gp_test.run(format('SELECT body FROM gp_report_decide(%s, %s, true, NULL)', gs, a));
    r2 := gp_test.run(format('SELECT body FROM gp_report_submit(%s, %L)', w1,
                             v_args || '{"device_id": "phone-B"}'));
    PERFORM gp_test.eq(r2 - 'idempotent_replay', r, 'another device replays the same response');
    PERFORM gp_test.expect(format('SELECT body FROM gp_report_submit(%s, %L)', w1,
                                  v_args || '{"notes": "changed"}'),
                           'GP422:client_report_id_reused');
    PERFORM gp_test.eq((SELECT count(*) FROM reports WHERE worker_id = w1
                                                      AND client_report_id = 'idem-report-1'),
                       1::bigint, 'one report row');
    PERFORM gp_test.eq((SELECT count(*) FROM ledger_txns WHERE kind = 'award'
                                                          AND refs ->> 'assignment_id' = a::text),
                       1::bigint, 'one award');
    -- Client report ids are per worker: vol may use the same id.
    a := gp_test.claim(vol, t);
    PERFORM gp_test.report(vol, a, 'idem-report-1');

    -- Validation.
    a := gp_test.claim(gp_test.id('racer1'), t);
    PERFORM gp_test.expect(format('SELECT body FROM gp_report_submit(%s, %L)', gp_test.id('racer1'),
                                  gp_test.report_args(a, 'future', jsonb_build_object(
                                      'made_at', gp_test.ts(now() + interval '10 minutes')))),
                           'GP400:report_in_future');
    PERFORM gp_test.expect(format('SELECT body FROM gp_report_submit(%s, %L)', gp_test.id('racer1'),
                                  gp_test.report_args(a, 'early', jsonb_build_object(
                                      'made_at', gp_test.ts(now() - interval '1 hour')))),
                           'GP409:report_before_claim');
    PERFORM gp_test.expect(format('SELECT body FROM gp_report_submit(%s, %L)', gp_test.id('racer1'),
                                  gp_test.report_args(a, 'has space')),
                           'GP400:invalid_client_report_id');
    PERFORM gp_test.expect(format('SELECT body FROM gp_report_submit(%s, %L)', gp_test.id('racer1'),
                                  gp_test.report_args(a, 'x', '{"evidence": [{"url": "https://a/b", "sha256": "xyz"}]}')),
                           'GP400:invalid_evidence');
    PERFORM gp_test.expect(format('SELECT body FROM gp_report_submit(%s, %L)', gp_test.id('racer1'),
                                  gp_test.report_args(a, 'x', '{"evidence": [{"url": "ftp://a/b", "sha256": "00"}]}')),
                           'GP400:invalid_evidence');
    PERFORM gp_test.expect(format('SELECT body FROM gp_report_submit(%s, %L)', gp_test.id('racer1'),
                                  gp_test.report_args(a, 'x') || jsonb_build_object('task_id', t)),
                           'GP400:invalid_target');
    PERFORM gp_test.expect(format('SELECT body FROM gp_report_submit(%s, %L)', gp_test.id('racer1'),
                                  gp_test.report_args(a, 'x', '{"lat": 30}')),
                           'GP400:invalid_place');
    PERFORM gp_test.expect(format('SELECT body FROM gp_report_submit(%s, %L)', gp_test.id('racer1'),
                                  gp_test.report_args(a, 'x', '{"made_at": "yesterday"}')),
                           'GP400:invalid_timestamp');
    PERFORM gp_test.expect(format('SELECT body FROM gp_report_submit(%s, %L)', gp_test.id('racer2'),
                                  gp_test.report_args(a, 'x')), 'GP404:assignment_not_found');
    PERFORM gp_test.expect(format('SELECT body FROM gp_report_submit(%s, %L)', gp_test.id('racer2'),
                                  (gp_test.report_args(a, 'x') - 'assignment_id')
                                  || jsonb_build_object('task_id', t)),
                           'GP404:assignment_not_found');
    PERFORM gp_test.eq((SELECT count(*) FROM reports WHERE worker_id = gp_test.id('racer1')),
                       0::bigint, 'refused reports leave no trace');
    -- By task_id instead of assignment_id.
    r := gp_test.run(format('SELECT body FROM gp_report_submit(%s, %L)', gp_test.id('racer1'),
                            (gp_test.report_args(a, 'by-task') - 'assignment_id')
                            || jsonb_build_object('task_id', t)));
    PERFORM gp_test.eq((r -> 'assignment' ->> 'id')::bigint, a, 'task_id resolves the assignment');
    PERFORM gp_test.eq(r -> 'report' -> 'flags', '[]'::jsonb, 'a clean report has no flags');

    -- Evidence requirements.
    t := gp_test.publish(gs, g1, '{"evidence_photos": 2, "evidence_checkin": true}');
    a := gp_test.claim(w1, t);
    PERFORM gp_test.expect(format('SELECT body FROM gp_report_submit(%s, %L)', w1,
                                  gp_test.report_args(a, 'ev-1')), 'GP400:evidence_required');
    PERFORM gp_test.expect(format('SELECT body FROM gp_report_submit(%s, %L)', w1,
                                  gp_test.report_args(a, 'ev-1', jsonb_build_object('evidence',
                                      jsonb_build_array(
                                          jsonb_build_object('url', 'https://x/1', 'sha256', repeat('0', 64)),
                                          jsonb_build_object('url', 'https://x/2', 'sha256', repeat('1', 64)))))),
                           'GP409:checkin_required');
    r := gp_test.run(format('SELECT gp_checkin(%s, %s, %L)', w1, a,
                            jsonb_build_object('lat', 30.6, 'lng', 104.06, 'at', gp_test.ts(now()))));
    PERFORM gp_test.ok((r ->> 'id') IS NOT NULL, 'check-in stored');
    r := gp_test.run(format('SELECT body FROM gp_report_submit(%s, %L)', w1,
                            gp_test.report_args(a, 'ev-1', jsonb_build_object('evidence',
                                jsonb_build_array(
                                    jsonb_build_object('url', 'https://x/1', 'sha256', repeat('0', 64)),
                                    jsonb_build_object('url', 'https://x/2', 'sha256', repeat('1', 64)))))));
    PERFORM gp_test.eq(r -> 'assignment' ->> 'state', 'submitted', 'report with evidence accepted');

    -- Geofence, flagged: 100 m around (30.6, 104.06).
    t := gp_test.publish(gs, g1, '{"lat": 30.6, "lng": 104.06, "geofence_m": 100}');
    a := gp_test.claim(w1, t);
    r := gp_test.report(w1, a, 'geo-flag-1', '{"lat": 30.6, "lng": 104.065}');
    PERFORM gp_test.ok(r -> 'report' -> 'flags' ? 'outside_geofence', 'outside the fence: flagged');
    PERFORM gp_test.ok((r -> 'report' ->> 'distance_m')::numeric BETWEEN 470 AND 490,
                       'distance about 480 m');
    a := gp_test.claim(vol, t);
    r := gp_test.report(vol, a, 'geo-flag-2');
    PERFORM gp_test.ok(r -> 'report' -> 'flags' ? 'no_location', 'no location: flagged');
    r := gp_test.run(format('SELECT gp_review_queue(%s, %L)', gs,
                            jsonb_build_object('task_id', t, 'flagged', true)));
    PERFORM gp_test.eq(jsonb_array_length(r -> 'items'), 2, 'flagged reports in the queue');

    -- Geofence, enforced.
    t := gp_test.publish(gs, g1, '{"lat": 30.6, "lng": 104.06, "geofence_m": 100, "geofence_enforced": true}');
    a := gp_test.claim(w1, t);
    PERFORM gp_test.expect(format('SELECT body FROM gp_report_submit(%s, %L)', w1,
                                  gp_test.report_args(a, 'geo-enf-1', '{"lat": 30.6, "lng": 104.065}')),
                           'GP409:outside_geofence');
    PERFORM gp_test.expect(format('SELECT body FROM gp_report_submit(%s, %L)', w1,
                                  gp_test.report_args(a, 'geo-enf-1')), 'GP400:location_required');
    PERFORM gp_test.expect(format('SELECT gp_checkin(%s, %s, %L)', w1, a,
                                  jsonb_build_object('lat', 30.61, 'lng', 104.06, 'at', gp_test.ts(now()))),
                           'GP409:outside_geofence');
    v_args := jsonb_build_object('lat', 30.6003, 'lng', 104.0601, 'at', gp_test.ts(now()));
    r := gp_test.run(format('SELECT gp_checkin(%s, %s, %L)', w1, a, v_args));
    r2 := gp_test.run(format('SELECT gp_checkin(%s, %s, %L)', w1, a, v_args));
    PERFORM gp_test.eq(r2 ->> 'id', r ->> 'id', 'the same check-in again replays');
    PERFORM gp_test.expect(format('SELECT gp_checkin(%s, %s, %L)', w1, a,
                                  jsonb_build_object('lat', 30.6, 'lng', 104.06,
                                                     'at', gp_test.ts(now() + interval '1 hour'))),
                           'GP400:checkin_in_future');
    r := gp_test.report(w1, a, 'geo-enf-1', '{"lat": 30.6002, "lng": 104.0602}');
    PERFORM gp_test.eq(r -> 'report' -> 'flags', '[]'::jsonb, 'inside the fence: no flag');
    PERFORM gp_test.expect(format('SELECT gp_checkin(%s, %s, %L)', w1, a,
                                  jsonb_build_object('lat', 30.6, 'lng', 104.06,
                                                     'at', gp_test.ts(now() + interval '1 second'))),
                           'GP409:assignment_not_live');
END
$$;

------------------------------------------------------------------------------------------
-- 7. Timers: claim expiry, late sync, slot reassignment, auto-approval, auto-close, release
------------------------------------------------------------------------------------------
-- Whatever an earlier run left due is done first, so that what follows is deterministic.
DO $$
DECLARE
    i int := 0;
BEGIN
    WHILE (gp_timers_sweep(10000) ->> 'more')::boolean AND i < 100 LOOP
        i := i + 1;
    END LOOP;
END
$$;

-- Setup at T0: tasks with 1-2 s windows.
DO $$
DECLARE
    gs bigint := gp_test.id('gstaff');
    g1 bigint := gp_test.id('g1');
    t bigint;
    a bigint;
BEGIN
    -- t_exp: claims live 1 s, reviews 1 s.
    t := gp_test.publish(gs, g1, '{"slots": 2, "claim_ttl_s": 1, "review_window_s": 1}');
    PERFORM gp_test.set('t_exp', t);
    PERFORM gp_test.set('a_late', gp_test.claim(gp_test.id('w1'), t));
    PERFORM gp_test.set('a_toolate', gp_test.claim(gp_test.id('vol'), t));
    -- t_one: one slot, claims live 1 s.
    t := gp_test.publish(gs, g1, '{"slots": 1, "claim_ttl_s": 1, "review_window_s": 3600}');
    PERFORM gp_test.set('t_one', t);
    PERFORM gp_test.set('a_lost', gp_test.claim(gp_test.id('w1'), t));
    -- t_end: ends in 2 s, no sync grace: a live claim and a submitted report at the end.
    t := gp_test.publish(gs, g1, jsonb_build_object('slots', 3, 'review_window_s', 1,
             'sync_grace_s', 0, 'ends_at', gp_test.ts(now() + interval '2 seconds')));
    PERFORM gp_test.set('t_end', t);
    PERFORM gp_test.set('a_end_live', gp_test.claim(gp_test.id('w1'), t));
    a := gp_test.claim(gp_test.id('vol'), t);
    PERFORM gp_test.set('a_end_sub', a);
    PERFORM gp_test.report(gp_test.id('vol'), a, 'end-1');
    -- t_grace: ends in 2 s with a 3 s sync grace and a live claim.
    t := gp_test.publish(gs, g1, jsonb_build_object('slots', 2, 'sync_grace_s', 3,
             'ends_at', gp_test.ts(now() + interval '2 seconds')));
    PERFORM gp_test.set('t_grace', t);
    PERFORM gp_test.set('a_grace', gp_test.claim(gp_test.id('w1'), t));
    -- Nothing is due yet.
    PERFORM gp_test.ok(gp_test.state(gp_test.id('a_late')) = 'claimed', 'not expired early');
END
$$;

SELECT pg_sleep(2.3);

-- A batch of 1 does one thing (the earliest due: one claim of t_exp) and asks to be called
-- again.
DO $$
DECLARE
    r jsonb := gp_timers_sweep(1);
BEGIN
    PERFORM gp_test.eq((r ->> 'expired')::int + (r ->> 'approved')::int + (r ->> 'closed')::int
                       + (r ->> 'released')::int, 1, 'a batch of 1 does one thing');
    PERFORM gp_test.eq(r ->> 'more', 'true', 'and says there is more');
    PERFORM gp_test.eq((SELECT count(*) FROM assignments
                         WHERE id IN (gp_test.id('a_late'), gp_test.id('a_toolate'))
                           AND state = 'expired'), 1::bigint, 'the earliest claim expired first');
END
$$;

DO $$
DECLARE
    r jsonb;
    r2 jsonb;
    a bigint;
    a_row assignments;
    t tasks;
BEGIN
    r := gp_timers_sweep(1000);
    PERFORM gp_test.eq(r -> 'errors', '[]'::jsonb, 'sweep without errors');
    PERFORM gp_test.ok((r ->> 'expired')::int >= 2, 'claims expired');
    PERFORM gp_test.eq(gp_test.state(gp_test.id('a_late')), 'expired', 'a_late expired');
    PERFORM gp_test.eq(gp_test.state(gp_test.id('a_toolate')), 'expired', 'a_toolate expired');
    PERFORM gp_test.eq(gp_test.state(gp_test.id('a_lost')), 'expired', 'a_lost expired');
    PERFORM gp_test.ok(r -> 'effects' -> 'gates' @> jsonb_build_array(jsonb_build_object(
                           'task_id', gp_test.id('t_exp'), 'free_slots', 2)),
                       'the sweep reports the freed slots');
    PERFORM gp_test.ok(EXISTS (SELECT 1 FROM assignment_events
                                WHERE assignment_id = gp_test.id('a_late') AND to_state = 'expired'
                                  AND actor_id IS NULL AND timer = 'claim_expiry'),
                       'expiry in the history, by the timer');
    PERFORM gp_test.ok(EXISTS (SELECT 1 FROM outbox WHERE topic = 'assignment.expired'
                                AND (payload ->> 'assignment_id')::bigint = gp_test.id('a_late')),
                       'expiry in the outbox');
    -- t_end closed at its end: the live claim expired, the report was auto-approved, and with no
    -- sync grace the unused reservation came back in the same sweep.
    SELECT * INTO t FROM tasks WHERE id = gp_test.id('t_end');
    PERFORM gp_test.eq(t.status, 'closed', 't_end closed');
    PERFORM gp_test.eq(gp_test.state(gp_test.id('a_end_live')), 'expired', 'live claim expired at close');
    PERFORM gp_test.eq(gp_test.state(gp_test.id('a_end_sub')), 'approved', 'report auto-approved');
    PERFORM gp_test.ok(t.released_at IS NOT NULL AND t.release_txn IS NOT NULL, 't_end released');
    PERFORM gp_test.eq((SELECT balance FROM accounts WHERE kind = 'reservation' AND owner_id = t.id),
                       0::bigint, 't_end reservation empty');
    PERFORM gp_test.ok(r -> 'effects' -> 'awards' @> jsonb_build_array(jsonb_build_object(
                           'assignment_id', gp_test.id('a_end_sub'))), 'the award is reported');
    PERFORM gp_test.ok(EXISTS (SELECT 1 FROM task_events WHERE task_id = t.id AND event = 'closed'
                                                          AND timer = 'task_close'),
                       'close in the history');
    PERFORM gp_test.ok(EXISTS (SELECT 1 FROM task_events WHERE task_id = t.id
                                                          AND event = 'reservation_released'),
                       'release in the history');
    -- No report after the sync window (grace 0).
    PERFORM gp_test.expect(format('SELECT body FROM gp_report_submit(%s, %L)', gp_test.id('w1'),
                                  gp_test.report_args(gp_test.id('a_end_live'), 'end-late', jsonb_build_object(
                                      'made_at', gp_test.ts((SELECT claimed_at FROM assignments
                                                             WHERE id = gp_test.id('a_end_live')))))),
                           'GP409:sync_window_closed');
    -- t_grace closed but keeps its reservation until the sync grace has passed.
    SELECT * INTO t FROM tasks WHERE id = gp_test.id('t_grace');
    PERFORM gp_test.eq(t.status, 'closed', 't_grace closed');
    PERFORM gp_test.ok(t.released_at IS NULL, 't_grace not released during the grace');

    -- Late sync: a report made while a_late was live is accepted after its expiry.
    SELECT * INTO a_row FROM assignments WHERE id = gp_test.id('a_late');
    r := gp_test.report(gp_test.id('w1'), a_row.id, 'late-1', jsonb_build_object(
             'made_at', gp_test.ts(a_row.claimed_at + interval '200 milliseconds')));
    PERFORM gp_test.eq(r -> 'assignment' ->> 'state', 'submitted', 'late report accepted');
    PERFORM gp_test.ok(r -> 'report' -> 'flags' ? 'late_sync', 'late report flagged late_sync');
    PERFORM gp_test.eq((r -> 'gate' ->> 'free_slots')::int, 1, 'the late report takes a slot again');
    r2 := gp_test.report(gp_test.id('w1'), a_row.id, 'late-1', jsonb_build_object(
              'made_at', gp_test.ts(a_row.claimed_at + interval '200 milliseconds')));
    PERFORM gp_test.eq(r2 ->> 'idempotent_replay', 'true', 'late report retry replays');
    -- Made after the claim ended: refused (no skew tolerance here).
    SELECT * INTO a_row FROM assignments WHERE id = gp_test.id('a_toolate');
    PERFORM gp_test.expect(format('SELECT body FROM gp_report_submit(%s, %L, %L)', gp_test.id('vol'),
                                  gp_test.report_args(a_row.id, 'toolate', jsonb_build_object(
                                      'made_at', gp_test.ts(a_row.due_at + interval '300 milliseconds'))),
                                  '100 milliseconds'),
                           'GP409:claim_expired');
    -- ... but within the skew it is accepted and flagged.
    r := gp_test.run(format('SELECT body FROM gp_report_submit(%s, %L, %L)', gp_test.id('vol'),
                            gp_test.report_args(a_row.id, 'skewed', jsonb_build_object(
                                'made_at', gp_test.ts(a_row.due_at + interval '300 milliseconds'))),
                            '1 second'));
    PERFORM gp_test.ok(r -> 'report' -> 'flags' ? 'clock_skew', 'skewed report flagged');
    -- Slot reassigned: t_one's only slot went to w2 after a_lost expired.
    PERFORM gp_test.claim(gp_test.id('w2'), gp_test.id('t_one'));
    SELECT * INTO a_row FROM assignments WHERE id = gp_test.id('a_lost');
    PERFORM gp_test.expect(format('SELECT body FROM gp_report_submit(%s, %L)', gp_test.id('w1'),
                                  gp_test.report_args(a_row.id, 'lost-1', jsonb_build_object(
                                      'made_at', gp_test.ts(a_row.claimed_at + interval '100 milliseconds')))),
                           'GP409:slot_reassigned');
    PERFORM gp_test.eq(gp_test.state(a_row.id), 'expired', 'a_lost stays expired');
    -- A worker who claimed again cannot revive the old claim.
    a := gp_test.publish(gp_test.id('gstaff'), gp_test.id('g1'), '{"claim_ttl_s": 1}');
    PERFORM gp_test.set('t_reclaim', a);
    PERFORM gp_test.set('a_old', gp_test.claim(gp_test.id('w2'), a));
    PERFORM gp_test.check_invariants();
END
$$;

SELECT pg_sleep(1.2);

DO $$
DECLARE
    r jsonb;
    a_row assignments;
    v_new bigint;
BEGIN
    r := gp_timers_sweep(1000);
    PERFORM gp_test.eq(r -> 'errors', '[]'::jsonb, 'second sweep without errors');
    -- Auto-approval of the late report after its review window.
    SELECT * INTO a_row FROM assignments WHERE id = gp_test.id('a_late');
    PERFORM gp_test.eq(a_row.state, 'approved', 'late report auto-approved');
    PERFORM gp_test.ok(a_row.decided_by IS NULL AND a_row.award_txn IS NOT NULL,
                       'approved by the timer, paid');
    PERFORM gp_test.ok(r -> 'effects' -> 'awards' @> jsonb_build_array(jsonb_build_object(
                           'assignment_id', a_row.id, 'worker_id', gp_test.id('w1'))),
                       'the sweep returns the award for the cache');
    -- Manual approval after the timer (I8): one award, a clear 409.
    PERFORM gp_test.expect(format('SELECT body FROM gp_report_decide(%s, %s, true, NULL)',
                                  gp_test.id('gstaff'), a_row.id), 'GP409:already_approved');
    -- a_old expired; w2 claims t_reclaim again, then syncs a report for the old claim.
    PERFORM gp_test.eq(gp_test.state(gp_test.id('a_old')), 'expired', 'a_old expired');
    v_new := gp_test.claim(gp_test.id('w2'), gp_test.id('t_reclaim'));
    SELECT * INTO a_row FROM assignments WHERE id = gp_test.id('a_old');
    PERFORM gp_test.expect(format('SELECT body FROM gp_report_submit(%s, %L)', gp_test.id('w2'),
                                  gp_test.report_args(a_row.id, 'old-1', jsonb_build_object(
                                      'made_at', gp_test.ts(a_row.claimed_at + interval '100 milliseconds')))),
                           'GP409:claim_superseded');
    -- A sweep with nothing due does nothing.
    r := gp_timers_sweep(1000);
    PERFORM gp_test.ok(NOT (r -> 'effects' -> 'gates' @> jsonb_build_array(jsonb_build_object(
                           'task_id', gp_test.id('t_exp')))), 'nothing twice');
END
$$;

SELECT pg_sleep(2);

DO $$
DECLARE
    r jsonb;
    t tasks;
BEGIN
    r := gp_timers_sweep(1000);
    SELECT * INTO t FROM tasks WHERE id = gp_test.id('t_grace');
    PERFORM gp_test.ok(t.released_at IS NOT NULL, 't_grace released after its grace');
    PERFORM gp_test.eq((SELECT balance FROM accounts WHERE kind = 'reservation' AND owner_id = t.id),
                       0::bigint, 't_grace reservation empty');
    PERFORM gp_test.check_invariants();
END
$$;

------------------------------------------------------------------------------------------
-- 8. Cancel with work in flight; close when every slot is approved
------------------------------------------------------------------------------------------
DO $$
DECLARE
    gs bigint := gp_test.id('gstaff');
    g1 bigint := gp_test.id('g1');
    t bigint;
    a_sub bigint;
    a_live bigint;
    r jsonb;
    v_claimed timestamptz;
BEGIN
    -- Cancel with one submitted report and one live claim, sync grace 1 day.
    t := gp_test.publish(gs, g1, '{"slots": 3, "sync_grace_s": 86400}');
    a_sub := gp_test.claim(gp_test.id('w1'), t);
    PERFORM gp_test.report(gp_test.id('w1'), a_sub, 'cancel-sub');
    a_live := gp_test.claim(gp_test.id('vol'), t);
    r := gp_test.run(format('SELECT body FROM gp_task_cancel(%s, %s, %L)', gs, t, 'duplicate task'));
    PERFORM gp_test.eq(r ->> 'status', 'cancelled', 'cancelled with work in flight');
    PERFORM gp_test.ok(r -> 'receipt' = 'null'::jsonb, 'not released while a report is pending');
    PERFORM gp_test.eq(gp_test.state(a_live), 'expired', 'live claim ended by the cancel');
    PERFORM gp_test.eq((SELECT reason FROM assignments WHERE id = a_live), 'task_cancelled',
                       'with the reason');
    -- The submitted report is still reviewed and paid.
    r := gp_test.run(format('SELECT body FROM gp_report_decide(%s, %s, true, NULL)', gs, a_sub));
    PERFORM gp_test.eq(r ->> 'state', 'approved', 'report on a cancelled task approved');
    PERFORM gp_test.ok(r -> 'task' ->> 'released_at' IS NULL, 'held for the sync grace');
    -- Work done before the cancel, synced later: accepted.
    SELECT claimed_at INTO v_claimed FROM assignments WHERE id = a_live;
    r := gp_test.report(gp_test.id('vol'), a_live, 'cancel-late', jsonb_build_object(
             'made_at', gp_test.ts(v_claimed)));
    PERFORM gp_test.eq(r -> 'assignment' ->> 'state', 'submitted', 'late report after cancel accepted');
    PERFORM gp_test.eq((r -> 'gate' ->> 'free_slots')::int, 0, 'a cancelled task has no free slot');
    r := gp_test.run(format('SELECT body FROM gp_report_decide(%s, %s, false, %L)', gs, a_live, 'not needed'));
    PERFORM gp_test.eq(r ->> 'state', 'rejected', 'and reviewed');

    -- Same with no grace: released as soon as the last report is decided.
    t := gp_test.publish(gs, g1, '{"slots": 3, "sync_grace_s": 0}');
    a_sub := gp_test.claim(gp_test.id('w1'), t);
    PERFORM gp_test.report(gp_test.id('w1'), a_sub, 'cancel-sub-0');
    PERFORM gp_test.run(format('SELECT body FROM gp_task_cancel(%s, %s, %L)', gs, t, 'no longer needed'));
    r := gp_test.run(format('SELECT body FROM gp_report_decide(%s, %s, true, NULL)', gs, a_sub));
    PERFORM gp_test.ok(r -> 'task' ->> 'released_at' IS NOT NULL, 'released after the last decision');
    PERFORM gp_test.eq((SELECT balance FROM accounts WHERE kind = 'reservation' AND owner_id = t),
                       0::bigint, 'reservation empty');

    -- Every slot approved: the task closes at once.
    t := gp_test.publish(gs, g1, '{"slots": 1}');
    a_sub := gp_test.claim(gp_test.id('w1'), t);
    PERFORM gp_test.report(gp_test.id('w1'), a_sub, 'full-1');
    r := gp_test.run(format('SELECT body FROM gp_report_decide(%s, %s, true, NULL)', gs, a_sub));
    PERFORM gp_test.eq(r -> 'task' ->> 'status', 'closed', 'closed when every slot is approved');
    PERFORM gp_test.ok(r -> 'task' ->> 'released_at' IS NOT NULL, 'and settled');
    PERFORM gp_test.ok(EXISTS (SELECT 1 FROM task_events WHERE task_id = t AND event = 'closed'
                                                          AND reason = 'all_slots_approved'),
                       'close reason');
    PERFORM gp_test.check_invariants();
END
$$;

------------------------------------------------------------------------------------------
-- 9. Lists, cursors, history, append-only
------------------------------------------------------------------------------------------
DO $$
DECLARE
    w1 bigint := gp_test.id('w1');
    gs bigint := gp_test.id('gstaff');
    r jsonb;
    r2 jsonb;
    v_seen jsonb := '[]';
    v_cursor text;
    v_pages int := 0;
    t_near bigint;
    t_far bigint;
    i int;
BEGIN
    -- Worker list, one item per page, walked to the end: no duplicates, newest first.
    v_cursor := NULL;
    LOOP
        r := gp_test.run(format('SELECT gp_task_list(%s, %L)', w1,
                                jsonb_build_object('limit', 2) || CASE WHEN v_cursor IS NULL
                                    THEN '{}' ELSE jsonb_build_object('cursor', v_cursor) END));
        v_seen := v_seen || jsonb_path_query_array(r -> 'items', '$[*].id');
        v_pages := v_pages + 1;
        v_cursor := r ->> 'next_cursor';
        EXIT WHEN v_cursor IS NULL OR v_pages > 100;
    END LOOP;
    PERFORM gp_test.ok(v_pages > 1, 'several pages');
    PERFORM gp_test.eq((SELECT count(DISTINCT x) FROM jsonb_array_elements(v_seen) x),
                       jsonb_array_length(v_seen)::bigint, 'no task twice across pages');
    PERFORM gp_test.eq(v_seen, (SELECT jsonb_agg(x ORDER BY x::bigint DESC)
                                  FROM jsonb_array_elements(v_seen) x), 'newest first');
    PERFORM gp_test.ok(NOT EXISTS (SELECT 1 FROM jsonb_array_elements(v_seen) x
                                     JOIN tasks t ON t.id = x::bigint WHERE t.status <> 'open'),
                       'workers list open tasks by default');
    r := gp_test.run(format('SELECT gp_task_list(%s, %L)', w1, '{"mine": true, "status": "closed"}'));
    PERFORM gp_test.ok(r -> 'items' @> jsonb_build_array(jsonb_build_object('id', gp_test.id('t_end'))),
                       'mine lists closed tasks of mine');
    PERFORM gp_test.expect(format('SELECT gp_task_list(%s, %L)', w1, '{"cursor": "garbage!"}'),
                           'GP400:invalid_cursor');
    PERFORM gp_test.expect(format('SELECT gp_task_list(%s, %L)', w1,
                                  jsonb_build_object('cursor', gp_tcursor_encode(ARRAY['d', '1', '2']))),
                           'GP400:invalid_cursor');
    PERFORM gp_test.expect(format('SELECT gp_task_list(%s, %L)', w1, '{"lat": 30}'),
                           'GP400:invalid_near');
    PERFORM gp_test.expect(format('SELECT gp_task_list(%s, %L)', w1, '{"status": "draft"}'),
                           'GP400:invalid_value');
    PERFORM gp_test.expect(format('SELECT gp_task_list(%s, %L)', w1, '{"limit": 0}'),
                           'GP400:out_of_range');

    -- Near: tasks with a place, ordered by distance, paged by (distance, id).
    FOR i IN 1 .. 3 LOOP
        PERFORM gp_test.publish(gs, gp_test.id('g1'), jsonb_build_object(
            'category', 'near_test', 'lat', 31.0, 'lng', 104.0 + i * 0.001));
    END LOOP;
    t_far := gp_test.publish(gs, gp_test.id('g1'), '{"category": "near_test", "lat": 31.5, "lng": 104.0}');
    r := gp_test.run(format('SELECT gp_task_list(%s, %L)', w1,
            '{"lat": 31.0, "lng": 104.0, "radius_m": 1000, "category": "near_test", "limit": 2}'));
    PERFORM gp_test.eq(jsonb_array_length(r -> 'items'), 2, 'first near page');
    PERFORM gp_test.ok((r -> 'items' -> 0 ->> 'distance_m')::numeric
                       <= (r -> 'items' -> 1 ->> 'distance_m')::numeric, 'ordered by distance');
    r2 := gp_test.run(format('SELECT gp_task_list(%s, %L)', w1,
            jsonb_build_object('lat', 31.0, 'lng', 104.0, 'radius_m', 1000, 'category', 'near_test',
                               'limit', 2, 'cursor', r ->> 'next_cursor')));
    PERFORM gp_test.eq(jsonb_array_length(r2 -> 'items'), 1, 'second near page');
    PERFORM gp_test.ok(r2 ->> 'next_cursor' IS NULL, 'end of the near list');
    PERFORM gp_test.ok((r2 -> 'items' -> 0 ->> 'distance_m')::numeric
                       >= (r -> 'items' -> 1 ->> 'distance_m')::numeric, 'pages continue in order');
    PERFORM gp_test.ok(NOT ((r -> 'items') || (r2 -> 'items')) @> jsonb_build_array(
                           jsonb_build_object('id', t_far)), 'a far task is outside the radius');
    r := gp_test.run(format('SELECT gp_task_list(%s, %L)', gs,
            '{"lat": 31.0, "lng": 104.0, "radius_m": 100000, "category": "near_test"}'));
    PERFORM gp_test.eq(jsonb_array_length(r -> 'items'), 4, 'staff near list');
    PERFORM gp_test.eq((r -> 'items' -> 3 ->> 'id')::bigint, t_far, 'farthest last');

    -- The worker's assignments, paged.
    r := gp_test.run(format('SELECT gp_assignments_mine(%s, %L)', w1, '{"limit": 3}'));
    PERFORM gp_test.eq(jsonb_array_length(r -> 'items'), 3, 'mine page 1');
    r2 := gp_test.run(format('SELECT gp_assignments_mine(%s, %L)', w1,
                             jsonb_build_object('limit', 3, 'cursor', r ->> 'next_cursor')));
    PERFORM gp_test.ok((r2 -> 'items' -> 0 ->> 'id')::bigint < (r -> 'items' -> 2 ->> 'id')::bigint,
                       'mine page 2 continues');
    r := gp_test.run(format('SELECT gp_assignments_mine(%s, %L)', w1, '{"state": "approved"}'));
    PERFORM gp_test.ok(NOT EXISTS (SELECT 1 FROM jsonb_array_elements(r -> 'items') x
                                    WHERE x ->> 'state' <> 'approved'), 'mine filtered by state');
    -- One assignment: worker and staff yes, others no.
    r := gp_test.run(format('SELECT gp_assignment_get(%s, %s)', w1, gp_test.id('a_late')));
    PERFORM gp_test.ok(jsonb_array_length(r -> 'events') >= 4, 'assignment history');
    PERFORM gp_test.ok(r -> 'report' ->> 'client_report_id' = 'late-1', 'assignment report');
    PERFORM gp_test.run(format('SELECT gp_assignment_get(%s, %s)', gs, gp_test.id('a_late')));
    PERFORM gp_test.expect(format('SELECT gp_assignment_get(%s, %s)', gp_test.id('w2'),
                                  gp_test.id('a_late')), 'GP404:assignment_not_found');
    PERFORM gp_test.expect(format('SELECT gp_assignment_get(%s, %s)', gp_test.id('gstaff2'),
                                  gp_test.id('a_late')), 'GP404:assignment_not_found');

    -- Task history, paged, in order.
    r := gp_test.run(format('SELECT gp_task_history(%s, %s, %L)', gs, gp_test.id('t_exp'),
                            '{"limit": 3}'));
    r2 := gp_test.run(format('SELECT gp_task_history(%s, %s, %L)', gs, gp_test.id('t_exp'),
                             jsonb_build_object('limit', 100, 'cursor', r ->> 'next_cursor')));
    PERFORM gp_test.eq(r -> 'items' -> 0 ->> 'event', 'published', 'history starts at publication');
    PERFORM gp_test.ok((r2 -> 'items' -> 0 ->> 'id')::bigint > (r -> 'items' -> 2 ->> 'id')::bigint,
                       'history page 2 continues');
    PERFORM gp_test.ok((r -> 'items') || (r2 -> 'items') @> '[{"event": "assignment.approved", "timer": "auto_approval"}]',
                       'history shows the auto-approval');
    PERFORM gp_test.run(format('SELECT gp_task_history(%s, %s)', gp_test.id('auditor'),
                               gp_test.id('t_exp')));
    PERFORM gp_test.expect(format('SELECT gp_task_history(%s, %s)', w1, gp_test.id('t_exp')),
                           'GP404:task_not_found');
END
$$;

-- Append-only: the application role may not change history, reports or check-ins (no
-- privilege), and not even the owner may (triggers).
DO $$
DECLARE
    r jsonb;
BEGIN
    FOR r IN SELECT gp_test.try(s) FROM unnest(ARRAY[
                 'UPDATE task_events SET reason = NULL RETURNING NULL::jsonb',
                 'DELETE FROM assignment_events RETURNING NULL::jsonb',
                 'UPDATE reports SET notes = NULL RETURNING NULL::jsonb',
                 'DELETE FROM checkins RETURNING NULL::jsonb',
                 'DELETE FROM tasks RETURNING NULL::jsonb',
                 'UPDATE task_transitions SET to_state = to_state RETURNING NULL::jsonb']) s LOOP
        PERFORM gp_test.eq(r ->> 'code', '42501', 'gp_app may not change append-only data');
    END LOOP;
END
$$;

RESET ROLE;
DO $$
DECLARE
    r jsonb;
BEGIN
    FOR r IN SELECT gp_test.try(s) FROM unnest(ARRAY[
                 'UPDATE task_events SET reason = NULL RETURNING NULL::jsonb',
                 'DELETE FROM assignment_events RETURNING NULL::jsonb',
                 'UPDATE reports SET notes = NULL RETURNING NULL::jsonb',
                 'DELETE FROM checkins RETURNING NULL::jsonb']) s LOOP
        PERFORM gp_test.eq(r ->> 'code', 'GP403:append_only', 'even the owner may not');
    END LOOP;
END
$$;

------------------------------------------------------------------------------------------
-- 10. Races, through parallel connections (superuser drives dblink; the work runs as gp_app)
------------------------------------------------------------------------------------------
-- R1: 200 distinct workers claim a 10-slot task at once -> exactly 10 assignments.
-- R2: one worker claims a task 20 times at once -> exactly one assignment.
-- R3: one report (same client_report_id) submitted 10 times at once -> one report, replays.
-- (Setup commits first: the racing connections only see committed rows.)
SET ROLE gp_app;
DO $$
DECLARE
    t3 bigint;
BEGIN
    PERFORM gp_test.set('t_storm', gp_test.publish(gp_test.id('gstaff'), gp_test.id('g1'),
                                                   '{"slots": 10}'));
    PERFORM gp_test.set('t_same', gp_test.publish(gp_test.id('gstaff'), gp_test.id('g1'),
                                                  '{"slots": 5}'));
    t3 := gp_test.publish(gp_test.id('gstaff'), gp_test.id('g1'), '{"slots": 5}');
    PERFORM gp_test.set('a_dup', gp_test.claim(gp_test.id('racer1'), t3));
END
$$;
RESET ROLE;

DO $$
DECLARE
    v_conns int := gp_test.max_conns();
    t1 bigint := gp_test.id('t_storm');
    t2 bigint := gp_test.id('t_same');
    a bigint := gp_test.id('a_dup');
    v_res jsonb[];
    v_sqls text[];
    v_ok int;
    v_full int;
BEGIN
    IF NOT gp_test.have_dblink() THEN
        RAISE WARNING 'race tests skipped (no dblink)';
        RETURN;
    END IF;
    v_sqls := ARRAY(SELECT format('SELECT body FROM gp_task_claim(%s, %s)', gp_test.id('racer' || i), t1)
                      FROM generate_series(1, 200) i);
    v_res := gp_test.race(v_sqls, v_conns);
    SELECT count(*) FILTER (WHERE (x ->> 'ok')::boolean),
           count(*) FILTER (WHERE x ->> 'code' = 'GP409:task_full')
      INTO v_ok, v_full FROM unnest(v_res) x;
    PERFORM gp_test.eq(v_ok, 10, format('claim storm winners (%s connections)', v_conns));
    PERFORM gp_test.eq(v_full, 190, 'claim storm losers get task_full');
    PERFORM gp_test.eq((SELECT count(*) FROM assignments WHERE task_id = t1), 10::bigint,
                       'claim storm: 10 assignments');
    PERFORM gp_test.eq((SELECT occupied FROM tasks WHERE id = t1), 10, 'claim storm: counter');
    PERFORM gp_test.eq(gp_task_slots(t1) ->> 'free_slots', '0', 'claim storm: gate at 0');

    v_sqls := array_fill(format('SELECT body FROM gp_task_claim(%s, %s)', gp_test.id('racer7'), t2),
                         ARRAY[20]);
    v_res := gp_test.race(v_sqls, least(v_conns, 20));
    SELECT count(*) FILTER (WHERE (x ->> 'ok')::boolean),
           count(*) FILTER (WHERE x ->> 'code' = 'GP409:already_claimed')
      INTO v_ok, v_full FROM unnest(v_res) x;
    PERFORM gp_test.eq(v_ok, 1, 'same worker: one claim wins');
    PERFORM gp_test.eq(v_full, 19, 'same worker: the others get already_claimed');
    PERFORM gp_test.eq((SELECT count(*) FROM assignments WHERE task_id = t2), 1::bigint,
                       'same worker: one assignment');
    PERFORM gp_test.eq((SELECT occupied FROM tasks WHERE id = t2), 1, 'same worker: counter');

    v_sqls := array_fill(format('SELECT body FROM gp_report_submit(%s, %L)', gp_test.id('racer1'),
                                gp_test.report_args(a, 'race-report')), ARRAY[10]);
    v_res := gp_test.race(v_sqls, least(v_conns, 10));
    PERFORM gp_test.eq((SELECT count(*) FROM unnest(v_res) x WHERE (x ->> 'ok')::boolean), 10::bigint,
                       'duplicate reports: every request succeeds');
    PERFORM gp_test.eq((SELECT count(DISTINCT x -> 'r' -> 'report' ->> 'id') FROM unnest(v_res) x),
                       1::bigint, 'duplicate reports: one report id');
    PERFORM gp_test.eq((SELECT count(*) FROM unnest(v_res) x
                         WHERE NOT (x -> 'r' ? 'idempotent_replay')), 1::bigint,
                       'duplicate reports: one original, the rest replays');
    PERFORM gp_test.eq((SELECT count(*) FROM reports WHERE assignment_id = a), 1::bigint,
                       'duplicate reports: one row');
END
$$;

-- R4: several sweeps at once over many due timers -> every effect exactly once.
-- R5: the auto-approval timer and manual approvals race on the same reports -> one award each.
SET ROLE gp_app;
DO $$
DECLARE
    t bigint;
    i int;
    k int;
    a bigint;
BEGIN
    IF NOT gp_test.have_dblink() THEN
        RETURN;
    END IF;
    -- 8 tasks x 5 claims (1 s), 3 of which report at once (review 1 s).
    FOR k IN 1 .. 8 LOOP
        t := gp_test.publish(gp_test.id('gstaff'), gp_test.id('g1'),
                             '{"slots": 5, "claim_ttl_s": 1, "review_window_s": 1}');
        PERFORM gp_test.set('t_sweep' || k, t);
        FOR i IN 1 .. 5 LOOP
            a := gp_test.claim(gp_test.id('racer' || (20 + k * 5 + i)), t);
            IF i <= 3 THEN
                PERFORM gp_test.report(gp_test.id('racer' || (20 + k * 5 + i)), a, 'sweep-race');
            END IF;
        END LOOP;
    END LOOP;
END
$$;
RESET ROLE;

SELECT pg_sleep(1.3);

DO $$
DECLARE
    v_conns int := gp_test.max_conns();
    v_res jsonb[];
    v_sqls text[];
    v_tasks bigint[];
    v_subs bigint[];
BEGIN
    IF NOT gp_test.have_dblink() THEN
        RETURN;
    END IF;
    v_tasks := ARRAY(SELECT gp_test.id('t_sweep' || k) FROM generate_series(1, 8) k);
    v_subs := ARRAY(SELECT id FROM assignments WHERE task_id = ANY (v_tasks)
                                                 AND state = 'submitted' ORDER BY id);
    -- 6 sweepers with small batches, 3 rounds each, plus 3 manual approvals of every report.
    v_sqls := array_fill('SELECT gp_timers_sweep(4)'::text, ARRAY[18])
              || ARRAY(SELECT format('SELECT body FROM gp_report_decide(%s, %s, true, NULL)',
                                     gp_test.id('gstaff'), s)
                         FROM unnest(v_subs) s, generate_series(1, 3));
    v_res := gp_test.race(v_sqls, least(v_conns, 30));
    PERFORM gp_test.ok(NOT EXISTS (SELECT 1 FROM unnest(v_res) x
                                    WHERE NOT (x ->> 'ok')::boolean
                                      AND x ->> 'code' <> 'GP409:already_approved'),
                       'only already_approved may fail: '
                       || (SELECT string_agg(x ->> 'code', ',') FROM unnest(v_res) x
                            WHERE NOT (x ->> 'ok')::boolean));
    PERFORM gp_test.ok(NOT EXISTS (SELECT 1 FROM unnest(v_res) x
                                    WHERE x -> 'r' -> 'errors' <> '[]'::jsonb),
                       'no sweep reported errors');
    -- Finish whatever the small batches left, then check every effect happened once.
    PERFORM gp_timers_sweep(1000);
    PERFORM gp_test.eq((SELECT count(*) FROM assignments WHERE task_id = ANY (v_tasks)
                                                          AND state = 'expired'), 16::bigint,
                       'every unreported claim expired');
    PERFORM gp_test.eq((SELECT count(*) FROM assignments WHERE task_id = ANY (v_tasks)
                                                          AND state = 'approved'), 24::bigint,
                       'every report approved');
    PERFORM gp_test.eq((SELECT count(*) FROM assignment_events WHERE task_id = ANY (v_tasks)
                                                                AND to_state = 'expired'),
                       16::bigint, 'one expiry event per claim');
    PERFORM gp_test.eq((SELECT count(*) FROM assignment_events WHERE task_id = ANY (v_tasks)
                                                                AND to_state = 'approved'),
                       24::bigint, 'one approval event per report');
    PERFORM gp_test.eq((SELECT count(*) FROM ledger_txns WHERE kind = 'award'
                                                          AND (refs ->> 'task_id')::bigint = ANY (v_tasks)),
                       24::bigint, 'one award per report');
    -- The sweeps' award lists (for the cache) name each timer award once.
    PERFORM gp_test.ok((SELECT count(*) FROM unnest(v_res) x,
                               jsonb_array_elements(x -> 'r' -> 'awards') w)
                       = (SELECT count(DISTINCT w ->> 'assignment_id') FROM unnest(v_res) x,
                               jsonb_array_elements(x -> 'r' -> 'awards') w),
                       'no award reported twice');
END
$$;

-- R6: a task whose row another session holds (another instance's sweep, a claim) is skipped,
-- not waited for, and done by a later sweep once free.
SET ROLE gp_app;
DO $$
BEGIN
    IF NOT gp_test.have_dblink() THEN
        RETURN;
    END IF;
    PERFORM gp_test.set('t_locked', gp_test.publish(gp_test.id('gstaff'), gp_test.id('g1'),
                                                    '{"claim_ttl_s": 1}'));
    PERFORM gp_test.set('a_locked', gp_test.claim(gp_test.id('racer199'), gp_test.id('t_locked')));
END
$$;
RESET ROLE;

SELECT pg_sleep(1.2);

DO $$
DECLARE
    r jsonb;
BEGIN
    IF NOT gp_test.have_dblink() THEN
        RETURN;
    END IF;
    PERFORM dblink_connect('gplock', gp_test.conninfo());
    PERFORM dblink_exec('gplock', 'BEGIN');
    PERFORM * FROM dblink('gplock', format('SELECT id FROM tasks WHERE id = %s FOR UPDATE',
                                           gp_test.id('t_locked'))) AS x (id bigint);
    SET LOCAL ROLE gp_app;
    r := gp_timers_sweep(1000);
    PERFORM gp_test.ok((r ->> 'skipped')::int >= 1, 'a locked task is skipped');
    PERFORM gp_test.eq(gp_test.state(gp_test.id('a_locked')), 'claimed', 'and left alone');
    RESET ROLE;
    PERFORM dblink_exec('gplock', 'COMMIT');
    PERFORM dblink_disconnect('gplock');
END
$$;

DO $$
BEGIN
    IF NOT gp_test.have_dblink() THEN
        RETURN;
    END IF;
    SET LOCAL ROLE gp_app;
    PERFORM gp_timers_sweep(1000);
    PERFORM gp_test.eq(gp_test.state(gp_test.id('a_locked')), 'expired', 'done by the next sweep');
END
$$;

------------------------------------------------------------------------------------------
-- 11. Invariants over everything this run did, then clean up the scratch schema
------------------------------------------------------------------------------------------
SET ROLE gp_app;
SELECT gp_test.check_invariants();
RESET ROLE;
DROP SCHEMA gp_test CASCADE;
\echo test_tasks: OK
