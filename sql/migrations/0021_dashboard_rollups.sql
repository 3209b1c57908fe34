-- sql/migrations/0021_dashboard_rollups.sql
-- The dashboard's counters off the commit path (issue 12) and rolled up per subtree (issue 14).
--
-- Before (0018): triggers updated per-(unit, day) counter rows inside every claim, report,
-- approval and charge -- a hot row per unit and day that every award of the unit's workers
-- waited for, and 5-12 extra statements per award. Now:
--   * the ledger needs no trigger at all: gp_dash_fold (sql/functions/90_dashboard.sql) reads
--     the committed ledger transactions in (xid, id) order below its snapshot's xmin, as the
--     audit sealer does (sql/migrations/0006_audit.sql), from a watermark in dash_fold_state;
--   * tasks, assignments' state changes, flagged reports and worker role grants append one
--     row each to dash_queue -- an insert into a heap with no index, no lookup, no row lock --
--     and the fold deletes what it has folded;
--   * the fold (the `dashboard` sweep, every console.dashboard_fold_interval) adds a batch to
--     the counters set-based, one statement per counter table.
-- Every counter row is now a subtree total: the row of (unit, day) counts the events of the
-- unit and of every unit below it, so a street's 30 days are 30 rows and its communities'
-- 30 days are 30 rows each (issue 14: the read no longer sums every leaf of the street).
-- Tables and triggers live here; dash_rebuild and gp_dash_fold in sql/functions/90_dashboard.sql.

DROP TRIGGER tasks_dashboard ON tasks;
DROP TRIGGER assignments_dashboard_insert ON assignments;
DROP TRIGGER assignments_dashboard_update ON assignments;
DROP TRIGGER reports_dashboard ON reports;
DROP TRIGGER postings_dashboard ON postings;
DROP TRIGGER role_grants_dashboard ON role_grants;
DROP FUNCTION dash_on_task(), dash_on_assignment(), dash_on_report(), dash_on_postings(),
    dash_on_role(), dash_rebuild(),
    dash_redeem(bigint, bigint, date, bigint, int), dash_touch(bigint, bigint, date),
    dash_add(bigint, date, bigint, bigint, bigint, bigint, bigint, bigint, bigint, bigint,
             bigint, bigint, bigint),
    dash_ancestors(bigint), dash_street(bigint);

DROP TABLE dash_daily, dash_units, dash_merchant_daily;

-- The figures of a subtree (unit_id and everything below it) on a day. parent_id is the
-- unit's parent: a unit's children's rows are read by (parent_id, day).
CREATE TABLE dash_daily (
    street_id        bigint NOT NULL,
    parent_id        bigint,
    unit_id          bigint NOT NULL REFERENCES org_units (id),
    day              date NOT NULL,
    tasks_published  bigint NOT NULL DEFAULT 0,
    slots_published  bigint NOT NULL DEFAULT 0,
    claimed          bigint NOT NULL DEFAULT 0,
    reported         bigint NOT NULL DEFAULT 0,
    approved         bigint NOT NULL DEFAULT 0,
    rejected         bigint NOT NULL DEFAULT 0,
    flagged          bigint NOT NULL DEFAULT 0,
    points_issued    bigint NOT NULL DEFAULT 0,
    points_redeemed  bigint NOT NULL DEFAULT 0,
    redemptions      bigint NOT NULL DEFAULT 0,
    active_workers   bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (unit_id, day)
);
CREATE INDEX dash_daily_parent_day ON dash_daily (parent_id, day);

-- Stocks of a subtree: points pending now, workers (worker and volunteer grants).
CREATE TABLE dash_units (
    street_id       bigint NOT NULL,
    parent_id       bigint,
    unit_id         bigint PRIMARY KEY REFERENCES org_units (id),
    points_pending  bigint NOT NULL DEFAULT 0,
    workers         bigint NOT NULL DEFAULT 0
);
CREATE INDEX dash_units_parent ON dash_units (parent_id);

-- Redemptions per merchant of the workers of a subtree, per day.
CREATE TABLE dash_merchant_daily (
    street_id    bigint NOT NULL,
    unit_id      bigint NOT NULL REFERENCES org_units (id),
    day          date NOT NULL,
    merchant_id  bigint NOT NULL,
    points       bigint NOT NULL DEFAULT 0,
    count        bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (unit_id, day, merchant_id)
);

-- What the fold has not yet counted: one row per event, appended by the triggers below.
-- No index and no key: the writers only append; the fold takes a batch by ctid (SKIP LOCKED)
-- and deletes it in the transaction that counts it. Vacuumed often (it is emptied every
-- second). what / ref / n:
--   task      ref = the task's unit,      n = its slots      at = created_at
--   claimed, submitted, approved, rejected
--             ref = the worker,           n = 1              at = the state's timestamp
--   flag      ref = the report,           n = 1              at = received_at
--   grant     ref = the granted unit,     n = +1 / -1        at = now()
CREATE TABLE dash_queue (
    street_id  bigint NOT NULL,
    what       text NOT NULL,
    ref        bigint NOT NULL,
    n          bigint NOT NULL,
    at         timestamptz NOT NULL
) WITH (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 5000,
        autovacuum_vacuum_insert_scale_factor = 0, autovacuum_vacuum_insert_threshold = 5000);

-- Where the fold of the ledger stands: the (xid, id) of the last ledger transaction counted.
CREATE TABLE dash_fold_state (
    one       boolean PRIMARY KEY DEFAULT true CHECK (one),
    last_xid  xid8,
    last_txn  bigint,
    built     boolean NOT NULL DEFAULT false,  -- dash_rebuild() has run since this migration
    folded_at timestamptz
);
INSERT INTO dash_fold_state DEFAULT VALUES;

-- gp_app reads the counters and only appends to the queue; the fold and the rebuild write
-- the counters as SECURITY DEFINER functions.
GRANT SELECT ON dash_daily, dash_units, dash_merchant_daily, dash_fold_state TO gp_app;
GRANT INSERT ON dash_queue TO gp_app;

------------------------------------------------------------------------------------------
-- The appends (public schema: triggers must not depend on schema gp, which migrate
-- re-creates). Each is one INSERT of values the row already has.
------------------------------------------------------------------------------------------
CREATE FUNCTION dash_q_task() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.dash_queue (street_id, what, ref, n, at)
    VALUES (NEW.street_id, 'task', NEW.unit_id, NEW.slots, NEW.created_at);
    RETURN NULL;
END
$$;
CREATE TRIGGER tasks_dashboard AFTER INSERT ON tasks
    FOR EACH ROW EXECUTE FUNCTION dash_q_task();

-- A claim; a state change to submitted / approved / rejected (an assignment inserted in a
-- later state -- never by the API -- also counts its state).
CREATE FUNCTION dash_q_assignment() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO public.dash_queue (street_id, what, ref, n, at)
        VALUES (NEW.street_id, 'claimed', NEW.worker_id, 1, NEW.claimed_at);
    END IF;
    IF NEW.state IN ('submitted', 'approved', 'rejected') THEN
        INSERT INTO public.dash_queue (street_id, what, ref, n, at)
        VALUES (NEW.street_id, NEW.state, NEW.worker_id, 1,
                CASE NEW.state WHEN 'submitted' THEN NEW.submitted_at ELSE NEW.decided_at END);
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER assignments_dashboard_insert AFTER INSERT ON assignments
    FOR EACH ROW EXECUTE FUNCTION dash_q_assignment();
CREATE TRIGGER assignments_dashboard_update AFTER UPDATE OF state ON assignments
    FOR EACH ROW WHEN (OLD.state IS DISTINCT FROM NEW.state
                       AND NEW.state IN ('submitted', 'approved', 'rejected'))
    EXECUTE FUNCTION dash_q_assignment();

CREATE FUNCTION dash_q_report() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.dash_queue (street_id, what, ref, n, at)
    VALUES (NEW.street_id, 'flag', NEW.id, 1, NEW.received_at);
    RETURN NULL;
END
$$;
CREATE TRIGGER reports_dashboard AFTER INSERT ON reports
    FOR EACH ROW WHEN (cardinality(NEW.flags) > 0) EXECUTE FUNCTION dash_q_report();

CREATE FUNCTION dash_q_grant() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO public.dash_queue (street_id, what, ref, n, at)
        VALUES (NEW.street_id, 'grant', NEW.unit_id, 1, now());
    ELSE
        INSERT INTO public.dash_queue (street_id, what, ref, n, at)
        VALUES (OLD.street_id, 'grant', OLD.unit_id, -1, now());
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER role_grants_dashboard_insert AFTER INSERT ON role_grants
    FOR EACH ROW WHEN (NEW.role IN ('worker', 'volunteer')) EXECUTE FUNCTION dash_q_grant();
CREATE TRIGGER role_grants_dashboard_delete AFTER DELETE ON role_grants
    FOR EACH ROW WHEN (OLD.role IN ('worker', 'volunteer')) EXECUTE FUNCTION dash_q_grant();

-- The counters are rebuilt from the base tables (and the watermark set) by dash_rebuild() in
-- sql/functions/90_dashboard.sql, which `gridpointsd migrate` creates after this file: this
-- migration leaves them empty (built = false), and the first fold runs the rebuild. On a
-- large data set run `SELECT dash_rebuild()` in psql right after the migration instead (the
-- sweep's statement timeout may be shorter than the rebuild).
