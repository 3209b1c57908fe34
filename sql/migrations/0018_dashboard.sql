-- sql/migrations/0018_dashboard.sql
-- The street dashboard (一屏统揽, issue 14): counters per day and per org unit, kept up to date
-- by triggers in the same transaction as the events that change them, so that the dashboard
-- reads a few thousand counter rows and never scans the ledger. Days are Asia/Shanghai
-- calendar days. Every row is on a leaf of the event (a worker's home unit, a task's unit);
-- gp_dashboard (sql/functions/90_dashboard.sql) sums a subtree at read time, so that no event
-- updates a row that every other event of the street updates too (no street-wide hot row).
--
-- What counts where:
--   tasks_published, slots_published   tasks INSERT                  the task's unit
--   claimed                             assignments INSERT            the worker's home unit
--   reported / approved / rejected      assignments state -> submitted / approved / rejected
--   active_workers                      first claim or report of a worker on a day (dash_active)
--   flagged                             reports INSERT with flags (dash_flags keeps the latest)
--   points_issued                       postings of 'award' and 'adjust' to a worker's accounts
--   points_redeemed, redemptions        postings of 'capture', 'charge' (count 1) and 'refund'
--                                       (negative) to a merchant's account, on the paying
--                                       worker's home unit and per merchant (dash_merchant_daily)
--   points_pending (dash_units)         every posting to a worker_pending account
--   workers (dash_units)                worker and volunteer role grants on the unit
--
-- dash_rebuild() recomputes everything from the base tables (this migration runs it once;
-- the benchmark runs it after its bulk load, which writes with triggers off); the test
-- tests/api/test_dashboard.py checks that the counters equal the ledger after a day of work.

-- community_id and grid_id are the unit's ancestors (NULL above them): a subtree is read by
-- equality on them, not by an ltree join, from one covering index on (street_id, day).
CREATE TABLE dash_daily (
    street_id        bigint NOT NULL,
    community_id     bigint,
    grid_id          bigint,
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
CREATE INDEX dash_daily_street_day ON dash_daily (street_id, day)
    INCLUDE (community_id, grid_id, unit_id, tasks_published, slots_published, claimed, reported,
             approved, rejected, flagged, points_issued, points_redeemed, redemptions,
             active_workers);

CREATE TABLE dash_units (
    street_id       bigint NOT NULL,
    unit_id         bigint PRIMARY KEY REFERENCES org_units (id),
    points_pending  bigint NOT NULL DEFAULT 0,
    workers         bigint NOT NULL DEFAULT 0
);
CREATE INDEX dash_units_street ON dash_units (street_id);

-- Who was active on a day: the first claim or report of the day counts the worker once.
CREATE TABLE dash_active (
    street_id  bigint NOT NULL,
    day        date NOT NULL,
    worker_id  bigint NOT NULL,
    PRIMARY KEY (day, worker_id)
);

CREATE TABLE dash_merchant_daily (
    street_id    bigint NOT NULL,
    unit_id      bigint NOT NULL REFERENCES org_units (id),
    merchant_id  bigint NOT NULL,
    day          date NOT NULL,
    points       bigint NOT NULL DEFAULT 0,
    count        bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (unit_id, merchant_id, day)
);
CREATE INDEX dash_merchant_daily_street_day ON dash_merchant_daily (street_id, day);

-- Flagged reports, newest first per street, for the dashboard's anomaly list.
CREATE TABLE dash_flags (
    id         bigserial PRIMARY KEY,
    street_id  bigint NOT NULL,
    unit_id    bigint NOT NULL REFERENCES org_units (id),
    at         timestamptz NOT NULL,
    report_id  bigint NOT NULL,
    worker_id  bigint NOT NULL,
    task_id    bigint NOT NULL,
    flags      text[] NOT NULL
);
CREATE INDEX dash_flags_street_at ON dash_flags (street_id, at DESC);

-- A roster's own key for a person (POST /api/v1/people/import, "external_id"): unique per
-- street, one per person and street.
CREATE TABLE person_external_ids (
    street_id    bigint NOT NULL REFERENCES org_units (id),
    external_id  text NOT NULL CHECK (length(external_id) BETWEEN 1 AND 64),
    person_id    bigint NOT NULL REFERENCES persons (id),
    PRIMARY KEY (street_id, external_id),
    UNIQUE (street_id, person_id)
);
GRANT SELECT, INSERT, UPDATE ON person_external_ids TO gp_app;

-- The public points board lists the month's manual adjustments (rare rows).
CREATE INDEX ledger_txns_adjust_at ON ledger_txns (created_at) WHERE kind = 'adjust';

GRANT SELECT ON dash_daily, dash_units, dash_active, dash_merchant_daily, dash_flags TO gp_app;

------------------------------------------------------------------------------------------
-- Helpers (public, for the triggers; SECURITY DEFINER: the application role only reads)
------------------------------------------------------------------------------------------
CREATE FUNCTION dash_day(p_at timestamptz) RETURNS date LANGUAGE sql IMMUTABLE AS $$
    SELECT (p_at AT TIME ZONE 'Asia/Shanghai')::date
$$;

CREATE FUNCTION dash_street(p_unit bigint) RETURNS bigint LANGUAGE sql STABLE AS $$
    SELECT split_part(ltree2text(path), '.', 1)::bigint FROM org_units WHERE id = p_unit
$$;

-- The unit's street, community and grid ids (NULL past the unit's own level).
CREATE FUNCTION dash_ancestors(p_unit bigint) RETURNS bigint[] LANGUAGE sql STABLE AS $$
    SELECT string_to_array(ltree2text(path), '.')::bigint[] FROM org_units WHERE id = p_unit
$$;

-- Adds to the counters of (unit, day), by named arguments: dash_add(u, d, claimed => 1).
-- Static SQL (its plan is cached per session): it runs on the award and claim paths.
CREATE FUNCTION dash_add(p_unit bigint, p_day date,
                         tasks_published bigint DEFAULT 0, slots_published bigint DEFAULT 0,
                         claimed bigint DEFAULT 0, reported bigint DEFAULT 0,
                         approved bigint DEFAULT 0, rejected bigint DEFAULT 0,
                         flagged bigint DEFAULT 0, points_issued bigint DEFAULT 0,
                         points_redeemed bigint DEFAULT 0, redemptions bigint DEFAULT 0,
                         active_workers bigint DEFAULT 0)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = gp, public, pg_temp AS $$
DECLARE
    v_anc bigint[];
BEGIN
    IF p_unit IS NULL THEN
        RETURN;
    END IF;
    v_anc := dash_ancestors(p_unit);
    INSERT INTO dash_daily AS d (street_id, community_id, grid_id, unit_id, day, tasks_published,
                                 slots_published, claimed, reported, approved, rejected,
                                 flagged, points_issued, points_redeemed, redemptions,
                                 active_workers)
    VALUES (v_anc[1], v_anc[2], v_anc[3], p_unit, p_day,
            dash_add.tasks_published, dash_add.slots_published, dash_add.claimed, dash_add.reported,
            dash_add.approved, dash_add.rejected, dash_add.flagged, dash_add.points_issued,
            dash_add.points_redeemed, dash_add.redemptions, dash_add.active_workers)
    ON CONFLICT (unit_id, day) DO UPDATE SET
        tasks_published = d.tasks_published + EXCLUDED.tasks_published,
        slots_published = d.slots_published + EXCLUDED.slots_published,
        claimed = d.claimed + EXCLUDED.claimed,
        reported = d.reported + EXCLUDED.reported,
        approved = d.approved + EXCLUDED.approved,
        rejected = d.rejected + EXCLUDED.rejected,
        flagged = d.flagged + EXCLUDED.flagged,
        points_issued = d.points_issued + EXCLUDED.points_issued,
        points_redeemed = d.points_redeemed + EXCLUDED.points_redeemed,
        redemptions = d.redemptions + EXCLUDED.redemptions,
        active_workers = d.active_workers + EXCLUDED.active_workers;
END
$$;

-- The worker's first activity of the day counts them once, on their home unit.
CREATE FUNCTION dash_touch(p_worker bigint, p_unit bigint, p_day date)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = gp, public, pg_temp AS $$
DECLARE
    v_street bigint := dash_street(p_unit);
BEGIN
    INSERT INTO dash_active (street_id, day, worker_id) VALUES (v_street, p_day, p_worker)
    ON CONFLICT DO NOTHING;
    IF FOUND THEN
        PERFORM dash_add(p_unit, p_day, active_workers => 1);
    END IF;
END
$$;

------------------------------------------------------------------------------------------
-- Triggers
------------------------------------------------------------------------------------------
CREATE FUNCTION dash_on_task() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
SET search_path = gp, public, pg_temp AS $$
BEGIN
    PERFORM dash_add(NEW.unit_id, dash_day(NEW.created_at), tasks_published => 1,
                     slots_published => NEW.slots::bigint);
    RETURN NULL;
END
$$;
CREATE TRIGGER tasks_dashboard AFTER INSERT ON tasks
    FOR EACH ROW EXECUTE FUNCTION dash_on_task();

CREATE FUNCTION dash_on_assignment() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
SET search_path = gp, public, pg_temp AS $$
DECLARE
    v_unit bigint;
    v_day date;
BEGIN
    SELECT unit_id INTO v_unit FROM persons WHERE id = NEW.worker_id;
    IF TG_OP = 'INSERT' THEN
        v_day := dash_day(NEW.claimed_at);
        PERFORM dash_add(v_unit, v_day, claimed => 1);
        PERFORM dash_touch(NEW.worker_id, v_unit, v_day);
        -- a claim inserted in a later state (never today) would also count below
        IF NEW.state = 'claimed' THEN
            RETURN NULL;
        END IF;
    END IF;
    IF NEW.state = 'submitted' THEN
        v_day := dash_day(NEW.submitted_at);
        PERFORM dash_add(v_unit, v_day, reported => 1);
        PERFORM dash_touch(NEW.worker_id, v_unit, v_day);
    ELSIF NEW.state = 'approved' THEN
        PERFORM dash_add(v_unit, dash_day(NEW.decided_at), approved => 1);
    ELSIF NEW.state = 'rejected' THEN
        PERFORM dash_add(v_unit, dash_day(NEW.decided_at), rejected => 1);
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER assignments_dashboard_insert AFTER INSERT ON assignments
    FOR EACH ROW EXECUTE FUNCTION dash_on_assignment();
CREATE TRIGGER assignments_dashboard_update AFTER UPDATE OF state ON assignments
    FOR EACH ROW WHEN (OLD.state IS DISTINCT FROM NEW.state)
    EXECUTE FUNCTION dash_on_assignment();

CREATE FUNCTION dash_on_report() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
SET search_path = gp, public, pg_temp AS $$
DECLARE
    v_unit bigint;
BEGIN
    SELECT unit_id INTO v_unit FROM persons WHERE id = NEW.worker_id;
    PERFORM dash_add(v_unit, dash_day(NEW.received_at), flagged => 1);
    INSERT INTO dash_flags (street_id, unit_id, at, report_id, worker_id, task_id, flags)
    VALUES (dash_street(v_unit), v_unit, NEW.received_at, NEW.id, NEW.worker_id, NEW.task_id,
            NEW.flags);
    RETURN NULL;
END
$$;
CREATE TRIGGER reports_dashboard AFTER INSERT ON reports
    FOR EACH ROW WHEN (cardinality(NEW.flags) > 0) EXECUTE FUNCTION dash_on_report();

-- One call per INSERT statement of postings (gp_ledger_post_legs inserts a transaction's
-- postings in one statement), set-based over its transition table.
CREATE FUNCTION dash_on_postings() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
SET search_path = gp, public, pg_temp AS $$
DECLARE
    r record;
BEGIN
    FOR r IN
        SELECT t.kind, dash_day(t.created_at) AS day, a.kind AS akind, a.owner_id, p.amount,
               (t.refs ->> 'worker_id')::bigint AS worker
          FROM new_postings p
          JOIN ledger_txns t ON t.id = p.txn_id
          JOIN accounts a ON a.id = p.account_id
         WHERE a.kind IN ('worker', 'worker_pending', 'merchant')
    LOOP
        IF r.akind = 'worker_pending' THEN
            INSERT INTO dash_units AS u (street_id, unit_id, points_pending)
            SELECT dash_street(w.unit_id), w.unit_id, r.amount FROM persons w
             WHERE w.id = r.owner_id
            ON CONFLICT (unit_id)
            DO UPDATE SET points_pending = u.points_pending + EXCLUDED.points_pending;
        END IF;
        IF r.akind IN ('worker', 'worker_pending') AND r.kind IN ('award', 'adjust') THEN
            PERFORM dash_add((SELECT unit_id FROM persons WHERE id = r.owner_id), r.day,
                             points_issued => r.amount);
        ELSIF r.akind = 'merchant' AND r.kind IN ('capture', 'charge', 'refund')
              AND r.worker IS NOT NULL THEN
            PERFORM dash_redeem(r.worker, r.owner_id, r.day, r.amount,
                                CASE WHEN r.kind = 'refund' THEN 0 ELSE 1 END);
        END IF;
    END LOOP;
    RETURN NULL;
END
$$;

CREATE FUNCTION dash_redeem(p_worker bigint, p_merchant bigint, p_day date, p_points bigint,
                            p_count int)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = gp, public, pg_temp AS $$
DECLARE
    v_unit bigint;
BEGIN
    SELECT unit_id INTO v_unit FROM persons WHERE id = p_worker;
    IF v_unit IS NULL THEN
        RETURN;
    END IF;
    PERFORM dash_add(v_unit, p_day, points_redeemed => p_points, redemptions => p_count::bigint);
    INSERT INTO dash_merchant_daily AS m (street_id, unit_id, merchant_id, day, points, count)
    VALUES (dash_street(v_unit), v_unit, p_merchant, p_day, p_points, p_count)
    ON CONFLICT (unit_id, merchant_id, day)
    DO UPDATE SET points = m.points + EXCLUDED.points, count = m.count + EXCLUDED.count;
END
$$;

CREATE TRIGGER postings_dashboard AFTER INSERT ON postings
    REFERENCING NEW TABLE AS new_postings
    FOR EACH STATEMENT EXECUTE FUNCTION dash_on_postings();

CREATE FUNCTION dash_on_role() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
SET search_path = gp, public, pg_temp AS $$
DECLARE
    g role_grants;
    v_delta bigint := CASE TG_OP WHEN 'INSERT' THEN 1 ELSE -1 END;
BEGIN
    IF TG_OP = 'INSERT' THEN
        g := NEW;
    ELSE
        g := OLD;
    END IF;
    IF g.role IN ('worker', 'volunteer') THEN
        INSERT INTO dash_units AS u (street_id, unit_id, workers)
        VALUES (dash_street(g.unit_id), g.unit_id, v_delta)
        ON CONFLICT (unit_id) DO UPDATE SET workers = u.workers + EXCLUDED.workers;
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER role_grants_dashboard AFTER INSERT OR DELETE ON role_grants
    FOR EACH ROW EXECUTE FUNCTION dash_on_role();

------------------------------------------------------------------------------------------
-- Rebuild from the base tables (this migration; the benchmark after its bulk load)
------------------------------------------------------------------------------------------
CREATE FUNCTION dash_rebuild() RETURNS void LANGUAGE plpgsql SECURITY DEFINER
SET search_path = gp, public, pg_temp AS $$
BEGIN
    LOCK TABLE dash_daily, dash_units, dash_active, dash_merchant_daily, dash_flags
        IN EXCLUSIVE MODE;
    DELETE FROM dash_daily;
    DELETE FROM dash_units;
    DELETE FROM dash_active;
    DELETE FROM dash_merchant_daily;
    DELETE FROM dash_flags;

    CREATE TEMP TABLE dash_tmp (unit_id bigint, day date, col text, n bigint) ON COMMIT DROP;
    INSERT INTO dash_tmp
    SELECT unit_id, dash_day(created_at), 'tasks_published', count(*) FROM tasks GROUP BY 1, 2
    UNION ALL
    SELECT unit_id, dash_day(created_at), 'slots_published', sum(slots) FROM tasks GROUP BY 1, 2
    UNION ALL
    SELECT w.unit_id, dash_day(a.claimed_at), 'claimed', count(*)
      FROM assignments a JOIN persons w ON w.id = a.worker_id GROUP BY 1, 2
    UNION ALL
    SELECT w.unit_id, dash_day(a.submitted_at), 'reported', count(*)
      FROM assignments a JOIN persons w ON w.id = a.worker_id
     WHERE a.submitted_at IS NOT NULL GROUP BY 1, 2
    UNION ALL
    SELECT w.unit_id, dash_day(a.decided_at), a.state, count(*)
      FROM assignments a JOIN persons w ON w.id = a.worker_id
     WHERE a.state IN ('approved', 'rejected') GROUP BY 1, 2, 3
    UNION ALL
    SELECT w.unit_id, dash_day(r.received_at), 'flagged', count(*)
      FROM reports r JOIN persons w ON w.id = r.worker_id
     WHERE cardinality(r.flags) > 0 GROUP BY 1, 2
    UNION ALL
    SELECT w.unit_id, dash_day(t.created_at), 'points_issued', sum(p.amount)
      FROM postings p JOIN ledger_txns t ON t.id = p.txn_id
      JOIN accounts a ON a.id = p.account_id JOIN persons w ON w.id = a.owner_id
     WHERE t.kind IN ('award', 'adjust') AND a.kind IN ('worker', 'worker_pending')
     GROUP BY 1, 2;

    INSERT INTO dash_active (street_id, day, worker_id)
    SELECT DISTINCT dash_street(w.unit_id), x.day, x.worker_id
      FROM (SELECT worker_id, dash_day(claimed_at) AS day FROM assignments
            UNION SELECT worker_id, dash_day(submitted_at) FROM assignments
                   WHERE submitted_at IS NOT NULL) x
      JOIN persons w ON w.id = x.worker_id;
    INSERT INTO dash_tmp
    SELECT w.unit_id, x.day, 'active_workers', count(*)
      FROM dash_active x JOIN persons w ON w.id = x.worker_id GROUP BY 1, 2;

    INSERT INTO dash_merchant_daily (street_id, unit_id, merchant_id, day, points, count)
    SELECT dash_street(w.unit_id), w.unit_id, a.owner_id, dash_day(t.created_at), sum(p.amount),
           count(*) FILTER (WHERE t.kind <> 'refund')
      FROM postings p JOIN ledger_txns t ON t.id = p.txn_id
      JOIN accounts a ON a.id = p.account_id
      JOIN persons w ON w.id = (t.refs ->> 'worker_id')::bigint
     WHERE t.kind IN ('capture', 'charge', 'refund') AND a.kind = 'merchant'
     GROUP BY w.unit_id, a.owner_id, dash_day(t.created_at);
    INSERT INTO dash_tmp
    SELECT unit_id, day, 'points_redeemed', sum(points) FROM dash_merchant_daily GROUP BY 1, 2
    UNION ALL
    SELECT unit_id, day, 'redemptions', sum(count) FROM dash_merchant_daily GROUP BY 1, 2;

    INSERT INTO dash_daily (street_id, community_id, grid_id, unit_id, day, tasks_published,
                            slots_published, claimed, reported, approved, rejected, flagged,
                            points_issued, points_redeemed, redemptions, active_workers)
    SELECT a[1], a[2], a[3], unit_id, day,
           coalesce(sum(n) FILTER (WHERE col = 'tasks_published'), 0),
           coalesce(sum(n) FILTER (WHERE col = 'slots_published'), 0),
           coalesce(sum(n) FILTER (WHERE col = 'claimed'), 0),
           coalesce(sum(n) FILTER (WHERE col = 'reported'), 0),
           coalesce(sum(n) FILTER (WHERE col = 'approved'), 0),
           coalesce(sum(n) FILTER (WHERE col = 'rejected'), 0),
           coalesce(sum(n) FILTER (WHERE col = 'flagged'), 0),
           coalesce(sum(n) FILTER (WHERE col = 'points_issued'), 0),
           coalesce(sum(n) FILTER (WHERE col = 'points_redeemed'), 0),
           coalesce(sum(n) FILTER (WHERE col = 'redemptions'), 0),
           coalesce(sum(n) FILTER (WHERE col = 'active_workers'), 0)
      FROM dash_tmp CROSS JOIN LATERAL (SELECT dash_ancestors(unit_id) AS a) x
     WHERE unit_id IS NOT NULL GROUP BY unit_id, day, a;

    INSERT INTO dash_flags (street_id, unit_id, at, report_id, worker_id, task_id, flags)
    SELECT dash_street(w.unit_id), w.unit_id, r.received_at, r.id, r.worker_id, r.task_id, r.flags
      FROM reports r JOIN persons w ON w.id = r.worker_id WHERE cardinality(r.flags) > 0;

    INSERT INTO dash_units (street_id, unit_id, points_pending, workers)
    SELECT dash_street(unit_id), unit_id, sum(pending), sum(workers)
      FROM (SELECT w.unit_id, a.balance AS pending, 0 AS workers
              FROM accounts a JOIN persons w ON w.id = a.owner_id
             WHERE a.kind = 'worker_pending' AND a.balance <> 0
            UNION ALL
            SELECT unit_id, 0, count(*) FROM role_grants
             WHERE role IN ('worker', 'volunteer') GROUP BY unit_id) x
     GROUP BY unit_id;
    DROP TABLE dash_tmp;
END
$$;
REVOKE EXECUTE ON FUNCTION dash_rebuild(),
    dash_add(bigint, date, bigint, bigint, bigint, bigint, bigint, bigint, bigint, bigint,
             bigint, bigint, bigint),
    dash_touch(bigint, bigint, date), dash_redeem(bigint, bigint, date, bigint, int) FROM PUBLIC;

SELECT dash_rebuild();
