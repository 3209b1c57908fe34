-- sql/functions/90_dashboard.sql -- the street dashboard (一屏统揽, issue 14).
-- Reads only the counters of sql/migrations/0018_dashboard.sql and 0021_dashboard_rollups.sql
-- (subtree totals per unit and day), which gp_dash_fold keeps, off the events' transactions,
-- from the queue the triggers append to and from the committed ledger: never a scan of the
-- ledger at read time. What counts where: docs/DASHBOARD.md.

-- The figures of a dash_daily row (or a sum of rows), as the API names them.
CREATE FUNCTION gp_dash_figures(p_published numeric, p_slots numeric, p_claimed numeric,
                                p_reported numeric, p_approved numeric, p_rejected numeric,
                                p_flagged numeric, p_issued numeric, p_redeemed numeric,
                                p_redemptions numeric, p_active numeric)
RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
    SELECT jsonb_build_object(
        'tasks_published', coalesce(p_published, 0), 'slots_published', coalesce(p_slots, 0),
        'claimed', coalesce(p_claimed, 0), 'reported', coalesce(p_reported, 0),
        'approved', coalesce(p_approved, 0), 'rejected', coalesce(p_rejected, 0),
        'flagged', coalesce(p_flagged, 0), 'points_issued', coalesce(p_issued, 0),
        'points_redeemed', coalesce(p_redeemed, 0), 'redemptions', coalesce(p_redemptions, 0),
        'active_workers', coalesce(p_active, 0))
$$;

-- The dashboard of p_unit's subtree (default: the actor's home unit) over the p_days days
-- ending today (Asia/Shanghai): staff and auditors of the unit; 404 outside their scope.
-- {"unit", "date", "as_of", "refresh_s", "today", "points_pending", "workers", "trend",
--  "children", "anomalies", "redemptions"} (docs/openapi.yaml, schema Dashboard).
-- Every counter row is a subtree total (sql/migrations/0021_dashboard_rollups.sql): the trend
-- is the unit's own rows (<= p_days), the children their rows by (parent_id, day), the
-- stocks one row -- a few hundred rows for a street, whatever its size.
CREATE FUNCTION gp_dashboard(p_actor bigint, p_unit bigint, p_days int, p_refresh_s int)
RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
DECLARE
    u org_units;
    v_street bigint;
    v_today date := (now() AT TIME ZONE 'Asia/Shanghai')::date;
    v_from date;
    v_trend jsonb;
    v_today_fig jsonb;
    v_children jsonb;
    v_stock dash_units;
    v_anom jsonb;
    v_merchants jsonb;
BEGIN
    u := gp_require_unit(p_actor,
                         coalesce(p_unit, (SELECT unit_id FROM persons WHERE id = p_actor)),
                         gp_reader_roles());
    IF p_days IS NULL OR p_days < 1 OR p_days > 366 THEN
        PERFORM gp_raise('400', 'invalid_query', 'days is out of range', 'days');
    END IF;
    v_street := split_part(ltree2text(u.path), '.', 1)::bigint;
    v_from := v_today - (p_days - 1);

    SELECT jsonb_agg(gp_dash_figures(x.tasks_published, x.slots_published, x.claimed,
                                     x.reported, x.approved, x.rejected, x.flagged,
                                     x.points_issued, x.points_redeemed, x.redemptions,
                                     x.active_workers) || jsonb_build_object('date', g.d::date)
                     ORDER BY g.d)
      INTO v_trend
      FROM generate_series(v_from, v_today, interval '1 day') AS g (d)
      LEFT JOIN (SELECT * FROM dash_daily
                  WHERE unit_id = u.id AND day BETWEEN v_from AND v_today) x
             ON x.day = g.d::date;
    v_today_fig := (v_trend -> -1) - 'date';

    SELECT coalesce(jsonb_agg(gp_dash_figures(x.tp, x.sp, x.c, x.r, x.a, x.rj, x.f, x.pi, x.pr,
                                              x.rd, x.aw)
               || jsonb_build_object('unit_id', c.id, 'name', c.name, 'level', c.level,
                      'workers', coalesce(w.workers, 0),
                      'completion_rate', CASE WHEN coalesce(x.c, 0) > 0
                          THEN round(x.a::numeric / x.c, 4) END,
                      'points_per_worker', CASE WHEN coalesce(w.workers, 0) > 0
                          THEN round(coalesce(x.pi, 0)::numeric / w.workers, 2) END)
               ORDER BY c.id), '[]')
      INTO v_children
      FROM org_units c
      LEFT JOIN (SELECT d.unit_id, sum(d.tasks_published) tp, sum(d.slots_published) sp,
                        sum(d.claimed) c, sum(d.reported) r, sum(d.approved) a,
                        sum(d.rejected) rj, sum(d.flagged) f, sum(d.points_issued) pi,
                        sum(d.points_redeemed) pr, sum(d.redemptions) rd,
                        sum(d.active_workers) aw
                   FROM dash_daily d
                  WHERE d.parent_id = u.id AND d.day BETWEEN v_from AND v_today
                  GROUP BY d.unit_id) x ON x.unit_id = c.id
      LEFT JOIN dash_units w ON w.unit_id = c.id
     WHERE c.parent_id = u.id;

    SELECT * INTO v_stock FROM dash_units WHERE unit_id = u.id;

    SELECT jsonb_build_object('today', coalesce((v_today_fig ->> 'flagged')::bigint, 0),
               'items', coalesce(jsonb_agg(jsonb_build_object(
                   'rule', 'flagged_report', 'flags', f.flags, 'report_id', f.report_id,
                   'task_id', f.task_id, 'worker_id', f.worker_id, 'unit_id', f.unit_id,
                   'at', f.at) ORDER BY f.at DESC), '[]'))
      INTO v_anom
      FROM (SELECT df.* FROM dash_flags df JOIN org_units o ON o.id = df.unit_id
             WHERE df.street_id = v_street AND (u.level = 'street' OR o.path <@ u.path)
             ORDER BY df.at DESC LIMIT 10) f;

    SELECT coalesce(jsonb_agg(jsonb_build_object('merchant_id', x.merchant_id, 'name', m.name,
                      'points', x.points, 'count', x.count) ORDER BY x.points DESC, x.merchant_id),
                    '[]')
      INTO v_merchants
      FROM (SELECT dm.merchant_id, sum(dm.points) AS points, sum(dm.count) AS count
              FROM dash_merchant_daily dm
             WHERE dm.unit_id = u.id AND dm.day BETWEEN v_from AND v_today
             GROUP BY dm.merchant_id
             ORDER BY sum(dm.points) DESC, dm.merchant_id LIMIT 20) x
      JOIN merchants m ON m.id = x.merchant_id;

    RETURN jsonb_build_object(
        'unit', jsonb_build_object('id', u.id, 'name', u.name, 'level', u.level),
        'date', v_today, 'days', p_days, 'as_of', now(), 'refresh_s', p_refresh_s,
        'today', v_today_fig,
        'points_pending', coalesce(v_stock.points_pending, 0),
        'workers', coalesce(v_stock.workers, 0),
        'trend', v_trend, 'children', v_children, 'anomalies', v_anom,
        'redemptions', jsonb_build_object(
            'today_points', coalesce((v_today_fig ->> 'points_redeemed')::bigint, 0),
            'today_count', coalesce((v_today_fig ->> 'redemptions')::bigint, 0),
            'merchants', v_merchants));
END
$$;

------------------------------------------------------------------------------------------
-- The counters: folded off the commit path (sql/migrations/0021_dashboard_rollups.sql)
------------------------------------------------------------------------------------------
-- The unit and its ancestors (street first), each with its parent and street: where a leaf's
-- figures are added so that every row is a subtree total.
CREATE FUNCTION gp_dash_up(p_unit bigint)
RETURNS TABLE (street_id bigint, parent_id bigint, unit_id bigint) LANGUAGE sql STABLE AS $$
    SELECT a.ids[1], CASE WHEN a.i > 1 THEN a.ids[a.i - 1] END, a.ids[a.i]
      FROM (SELECT string_to_array(ltree2text(u.path), '.')::bigint[] AS ids FROM org_units u
             WHERE u.id = p_unit) p,
           LATERAL (SELECT p.ids, i FROM generate_subscripts(p.ids, 1) AS i) a
$$;

-- The dashboard sweep (server/sweeps.c, every console.dashboard_fold_interval): counts up to
-- p_batch queued events and up to p_batch committed ledger transactions into the counters,
-- set-based, one statement per counter table; {"events", "txns", "more"} (or {"busy"} while
-- another instance folds, {"rebuilt"} when it ran dash_rebuild() first).
-- The ledger is read in (xid, id) order below the snapshot's xmin, from the watermark: every
-- transaction below xmin has finished, so none can commit behind the watermark later.
CREATE FUNCTION gp_dash_fold(p_batch int) RETURNS jsonb LANGUAGE plpgsql SECURITY DEFINER
SET search_path = gp, public, pg_temp AS $$
DECLARE
    s dash_fold_state;
    v_xmin xid8;
    v_q dash_queue[];
    v_txns bigint[];
    v_last_xid xid8;
    v_last_txn bigint;
BEGIN
    SELECT * INTO s FROM dash_fold_state FOR UPDATE SKIP LOCKED;
    IF NOT FOUND THEN
        RETURN jsonb_build_object('busy', true);
    END IF;
    IF NOT s.built THEN
        PERFORM dash_rebuild();
        RETURN jsonb_build_object('rebuilt', true, 'more', true);
    END IF;
    v_xmin := pg_snapshot_xmin(pg_current_snapshot());

    WITH q AS (
        DELETE FROM dash_queue WHERE ctid = ANY (ARRAY(
            SELECT ctid FROM dash_queue LIMIT p_batch FOR UPDATE SKIP LOCKED))
        RETURNING *)
    SELECT coalesce(array_agg(q), '{}') INTO v_q FROM q;

    SELECT coalesce(array_agg(t.id ORDER BY t.xid, t.id), '{}'),
           (array_agg(t.xid ORDER BY t.xid DESC, t.id DESC))[1],
           (array_agg(t.id ORDER BY t.xid DESC, t.id DESC))[1]
      INTO v_txns, v_last_xid, v_last_txn
      FROM (SELECT id, xid FROM ledger_txns
             WHERE xid < v_xmin
               AND (xid, id) > (coalesce(s.last_xid, '0'::xid8), coalesce(s.last_txn, 0))
             ORDER BY xid, id LIMIT p_batch) t;

    IF cardinality(v_q) = 0 AND cardinality(v_txns) = 0 THEN
        RETURN jsonb_build_object('events', 0, 'txns', 0, 'more', false);
    END IF;

    -- the day's counters (and who was active: the first claim or report of a worker on a day)
    WITH q AS (SELECT * FROM unnest(v_q)),
    work AS (
        SELECT q.ref AS worker, dash_day(q.at) AS day, q.what FROM q
         WHERE q.what IN ('claimed', 'submitted', 'approved', 'rejected')),
    act AS (
        INSERT INTO dash_active (street_id, day, worker_id)
        SELECT DISTINCT w.street_id, x.day, x.worker
          FROM work x JOIN persons w ON w.id = x.worker
         WHERE x.what IN ('claimed', 'submitted')
        ON CONFLICT DO NOTHING
        RETURNING day, worker_id),
    lp AS (
        SELECT t.kind, dash_day(t.created_at) AS day, a.kind AS akind, a.owner_id, p.amount,
               (t.refs ->> 'worker_id')::bigint AS payer
          FROM ledger_txns t JOIN postings p ON p.txn_id = t.id
          JOIN accounts a ON a.id = p.account_id
         WHERE t.id = ANY (v_txns) AND a.kind IN ('worker', 'worker_pending', 'merchant')),
    ev (unit, day, tp, sp, c, r, a, rj, f, pi, pr, rd, aw) AS (
        SELECT q.ref, dash_day(q.at), 1, q.n, 0, 0, 0, 0, 0, 0, 0, 0, 0 FROM q
         WHERE q.what = 'task'
        UNION ALL
        SELECT w.unit_id, x.day, 0, 0, (x.what = 'claimed')::int, (x.what = 'submitted')::int,
               (x.what = 'approved')::int, (x.what = 'rejected')::int, 0, 0, 0, 0, 0
          FROM work x JOIN persons w ON w.id = x.worker
        UNION ALL
        SELECT w.unit_id, dash_day(q.at), 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0
          FROM q JOIN reports r ON r.id = q.ref JOIN persons w ON w.id = r.worker_id
         WHERE q.what = 'flag'
        UNION ALL
        SELECT w.unit_id, act.day, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1
          FROM act JOIN persons w ON w.id = act.worker_id
        UNION ALL
        SELECT w.unit_id, lp.day, 0, 0, 0, 0, 0, 0, 0, lp.amount, 0, 0, 0
          FROM lp JOIN persons w ON w.id = lp.owner_id
         WHERE lp.akind IN ('worker', 'worker_pending') AND lp.kind IN ('award', 'adjust')
        UNION ALL
        SELECT w.unit_id, lp.day, 0, 0, 0, 0, 0, 0, 0, 0, lp.amount, (lp.kind <> 'refund')::int, 0
          FROM lp JOIN persons w ON w.id = lp.payer
         WHERE lp.akind = 'merchant' AND lp.kind IN ('capture', 'charge', 'refund')),
    leaf AS (
        SELECT unit, day, sum(tp) tp, sum(sp) sp, sum(c) c, sum(r) r, sum(a) a, sum(rj) rj,
               sum(f) f, sum(pi) pi, sum(pr) pr, sum(rd) rd, sum(aw) aw
          FROM ev WHERE unit IS NOT NULL GROUP BY unit, day)
    INSERT INTO dash_daily AS d (street_id, parent_id, unit_id, day, tasks_published,
                                 slots_published, claimed, reported, approved, rejected,
                                 flagged, points_issued, points_redeemed, redemptions,
                                 active_workers)
    SELECT up.street_id, up.parent_id, up.unit_id, l.day, sum(l.tp), sum(l.sp), sum(l.c),
           sum(l.r), sum(l.a), sum(l.rj), sum(l.f), sum(l.pi), sum(l.pr), sum(l.rd), sum(l.aw)
      FROM leaf l CROSS JOIN LATERAL gp_dash_up(l.unit) up
     GROUP BY up.street_id, up.parent_id, up.unit_id, l.day
     ORDER BY up.unit_id, l.day
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

    -- the stocks: points pending (every posting to a worker_pending account), workers (grants)
    WITH leaf (unit, pending, workers) AS (
        SELECT w.unit_id, p.amount, 0
          FROM postings p JOIN accounts a ON a.id = p.account_id
          JOIN persons w ON w.id = a.owner_id
         WHERE p.txn_id = ANY (v_txns) AND a.kind = 'worker_pending'
        UNION ALL
        SELECT q.ref, 0, q.n FROM unnest(v_q) q WHERE q.what = 'grant')
    INSERT INTO dash_units AS x (street_id, parent_id, unit_id, points_pending, workers)
    SELECT up.street_id, up.parent_id, up.unit_id, sum(l.pending), sum(l.workers)
      FROM leaf l CROSS JOIN LATERAL gp_dash_up(l.unit) up
     GROUP BY up.street_id, up.parent_id, up.unit_id
     ORDER BY up.unit_id
    ON CONFLICT (unit_id) DO UPDATE SET points_pending = x.points_pending + EXCLUDED.points_pending,
                                        workers = x.workers + EXCLUDED.workers;

    -- redemptions per merchant, on the paying worker's unit and its ancestors
    WITH leaf AS (
        SELECT w.unit_id AS unit, dash_day(t.created_at) AS day, a.owner_id AS merchant,
               sum(p.amount) AS points, count(*) FILTER (WHERE t.kind <> 'refund') AS n
          FROM ledger_txns t JOIN postings p ON p.txn_id = t.id
          JOIN accounts a ON a.id = p.account_id
          JOIN persons w ON w.id = (t.refs ->> 'worker_id')::bigint
         WHERE t.id = ANY (v_txns) AND t.kind IN ('capture', 'charge', 'refund')
           AND a.kind = 'merchant'
         GROUP BY 1, 2, 3)
    INSERT INTO dash_merchant_daily AS m (street_id, unit_id, day, merchant_id, points, count)
    SELECT up.street_id, up.unit_id, l.day, l.merchant, sum(l.points), sum(l.n)
      FROM leaf l CROSS JOIN LATERAL gp_dash_up(l.unit) up
     GROUP BY up.street_id, up.unit_id, l.day, l.merchant
     ORDER BY up.unit_id, l.day, l.merchant
    ON CONFLICT (unit_id, day, merchant_id)
    DO UPDATE SET points = m.points + EXCLUDED.points, count = m.count + EXCLUDED.count;

    -- the list of flagged reports
    INSERT INTO dash_flags (street_id, unit_id, at, report_id, worker_id, task_id, flags)
    SELECT w.street_id, w.unit_id, r.received_at, r.id, r.worker_id, r.task_id, r.flags
      FROM unnest(v_q) q JOIN reports r ON r.id = q.ref JOIN persons w ON w.id = r.worker_id
     WHERE q.what = 'flag';

    UPDATE dash_fold_state
       SET last_xid = coalesce(v_last_xid, last_xid), last_txn = coalesce(v_last_txn, last_txn),
           folded_at = now();
    RETURN jsonb_build_object('events', cardinality(v_q), 'txns', cardinality(v_txns),
                              'more', cardinality(v_q) >= p_batch
                                      OR cardinality(v_txns) >= p_batch);
END
$$;

-- Recomputes every counter from the base tables: after a bulk load written with triggers off
-- (make bench), or by hand. Locks the counters and the queue (writers that append to the
-- queue wait for it); counts the ledger below its snapshot's xmin and sets the fold's
-- watermark there, so that the fold goes on exactly where it stopped.
CREATE FUNCTION dash_rebuild() RETURNS void LANGUAGE plpgsql SECURITY DEFINER
SET search_path = gp, public, pg_temp AS $$
DECLARE
    v_xmin xid8;
    v_last_xid xid8;
    v_last_txn bigint;
BEGIN
    LOCK TABLE dash_fold_state, dash_queue, dash_daily, dash_units, dash_active,
        dash_merchant_daily, dash_flags IN EXCLUSIVE MODE;
    v_xmin := pg_snapshot_xmin(pg_current_snapshot());
    DELETE FROM dash_queue;
    DELETE FROM dash_daily;
    DELETE FROM dash_units;
    DELETE FROM dash_active;
    DELETE FROM dash_merchant_daily;
    DELETE FROM dash_flags;

    SELECT xid, id INTO v_last_xid, v_last_txn FROM ledger_txns WHERE xid < v_xmin
     ORDER BY xid DESC, id DESC LIMIT 1;

    CREATE TEMP TABLE dash_tx (id bigint, kind text, created_at timestamptz, refs jsonb)
        ON COMMIT DROP;
    INSERT INTO dash_tx SELECT id, kind, created_at, refs FROM ledger_txns WHERE xid < v_xmin;
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
      FROM postings p JOIN dash_tx t ON t.id = p.txn_id
      JOIN accounts a ON a.id = p.account_id JOIN persons w ON w.id = a.owner_id
     WHERE t.kind IN ('award', 'adjust') AND a.kind IN ('worker', 'worker_pending')
     GROUP BY 1, 2;

    INSERT INTO dash_active (street_id, day, worker_id)
    SELECT DISTINCT w.street_id, x.day, x.worker_id
      FROM (SELECT worker_id, dash_day(claimed_at) AS day FROM assignments
            UNION SELECT worker_id, dash_day(submitted_at) FROM assignments
                   WHERE submitted_at IS NOT NULL) x
      JOIN persons w ON w.id = x.worker_id;
    INSERT INTO dash_tmp
    SELECT w.unit_id, x.day, 'active_workers', count(*)
      FROM dash_active x JOIN persons w ON w.id = x.worker_id GROUP BY 1, 2;

    -- redemptions per merchant: the leaves first, then every ancestor
    CREATE TEMP TABLE dash_mtmp ON COMMIT DROP AS
    SELECT w.unit_id, dash_day(t.created_at) AS day, a.owner_id AS merchant_id,
           sum(p.amount) AS points, count(*) FILTER (WHERE t.kind <> 'refund') AS count
      FROM postings p JOIN dash_tx t ON t.id = p.txn_id
      JOIN accounts a ON a.id = p.account_id
      JOIN persons w ON w.id = (t.refs ->> 'worker_id')::bigint
     WHERE t.kind IN ('capture', 'charge', 'refund') AND a.kind = 'merchant'
     GROUP BY 1, 2, 3;
    INSERT INTO dash_tmp
    SELECT unit_id, day, 'points_redeemed', sum(points) FROM dash_mtmp GROUP BY 1, 2
    UNION ALL
    SELECT unit_id, day, 'redemptions', sum(count) FROM dash_mtmp GROUP BY 1, 2;
    INSERT INTO dash_merchant_daily (street_id, unit_id, day, merchant_id, points, count)
    SELECT up.street_id, up.unit_id, m.day, m.merchant_id, sum(m.points), sum(m.count)
      FROM dash_mtmp m CROSS JOIN LATERAL gp_dash_up(m.unit_id) up
     GROUP BY up.street_id, up.unit_id, m.day, m.merchant_id;

    INSERT INTO dash_daily (street_id, parent_id, unit_id, day, tasks_published,
                            slots_published, claimed, reported, approved, rejected, flagged,
                            points_issued, points_redeemed, redemptions, active_workers)
    SELECT up.street_id, up.parent_id, up.unit_id, x.day,
           coalesce(sum(x.n) FILTER (WHERE x.col = 'tasks_published'), 0),
           coalesce(sum(x.n) FILTER (WHERE x.col = 'slots_published'), 0),
           coalesce(sum(x.n) FILTER (WHERE x.col = 'claimed'), 0),
           coalesce(sum(x.n) FILTER (WHERE x.col = 'reported'), 0),
           coalesce(sum(x.n) FILTER (WHERE x.col = 'approved'), 0),
           coalesce(sum(x.n) FILTER (WHERE x.col = 'rejected'), 0),
           coalesce(sum(x.n) FILTER (WHERE x.col = 'flagged'), 0),
           coalesce(sum(x.n) FILTER (WHERE x.col = 'points_issued'), 0),
           coalesce(sum(x.n) FILTER (WHERE x.col = 'points_redeemed'), 0),
           coalesce(sum(x.n) FILTER (WHERE x.col = 'redemptions'), 0),
           coalesce(sum(x.n) FILTER (WHERE x.col = 'active_workers'), 0)
      FROM dash_tmp x CROSS JOIN LATERAL gp_dash_up(x.unit_id) up
     WHERE x.unit_id IS NOT NULL
     GROUP BY up.street_id, up.parent_id, up.unit_id, x.day
     ORDER BY up.unit_id, x.day;  -- a unit's days together: the trend reads few pages

    INSERT INTO dash_flags (street_id, unit_id, at, report_id, worker_id, task_id, flags)
    SELECT w.street_id, w.unit_id, r.received_at, r.id, r.worker_id, r.task_id, r.flags
      FROM reports r JOIN persons w ON w.id = r.worker_id WHERE cardinality(r.flags) > 0;

    INSERT INTO dash_units (street_id, parent_id, unit_id, points_pending, workers)
    SELECT up.street_id, up.parent_id, up.unit_id, sum(x.pending), sum(x.workers)
      FROM (SELECT w.unit_id, p.amount AS pending, 0 AS workers
              FROM postings p JOIN dash_tx t ON t.id = p.txn_id
              JOIN accounts a ON a.id = p.account_id JOIN persons w ON w.id = a.owner_id
             WHERE a.kind = 'worker_pending'
            UNION ALL
            SELECT unit_id, 0, 1 FROM role_grants WHERE role IN ('worker', 'volunteer')) x
      CROSS JOIN LATERAL gp_dash_up(x.unit_id) up
     GROUP BY up.street_id, up.parent_id, up.unit_id;

    UPDATE dash_fold_state SET last_xid = v_last_xid, last_txn = v_last_txn, built = true,
                               folded_at = now();
    DROP TABLE dash_tmp, dash_mtmp, dash_tx;
END
$$;

-- The org tree for the public points board (no login): the streets, or the children of a
-- unit above micro-grids -- id, name and level only. {"items": [{id, name, level}]}.
CREATE FUNCTION gp_public_units(p_parent bigint) RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF p_parent IS NOT NULL AND NOT EXISTS (
           SELECT 1 FROM org_units WHERE id = p_parent AND level IN ('street', 'community')) THEN
        PERFORM gp_raise('404', 'unit_not_found', 'unit not found', 'parent_id');
    END IF;
    RETURN jsonb_build_object('items', (
        SELECT coalesce(jsonb_agg(jsonb_build_object('id', id, 'name', name, 'level', level)
                                  ORDER BY name, id), '[]')
          FROM org_units
         WHERE CASE WHEN p_parent IS NULL THEN parent_id IS NULL ELSE parent_id = p_parent END));
END
$$;

------------------------------------------------------------------------------------------
-- XLSX exports (the server writes the workbook, server/xlsx.c): {"sheet", "columns", "rows"}
-- with every row of the range, or {"too_large": true, "count"} past p_max (413).
------------------------------------------------------------------------------------------
-- A worker's statement, every posting of [p_from, p_to), newest first: the rows of
-- GET /api/v1/workers/{id}/statement (gp_statement) without paging.
CREATE FUNCTION gp_statement_xlsx(p_actor bigint, p_worker bigint, p_kind text,
                                  p_from timestamptz, p_to timestamptz, p_max int)
RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_accs bigint[];
    v_n bigint;
    v_rows jsonb;
BEGIN
    PERFORM gp_require_ledger_reader(p_actor, p_worker);
    IF p_kind IS NOT NULL AND NOT (p_kind = ANY (gp_ledger_kinds())) THEN
        PERFORM gp_raise('400', 'invalid_kind', 'unknown transaction kind', 'kind');
    END IF;
    v_accs := ARRAY(SELECT id FROM accounts WHERE kind IN ('worker', 'worker_pending')
                                            AND owner_id = p_worker);
    SELECT count(*) INTO v_n
      FROM postings p JOIN ledger_txns t ON t.id = p.txn_id
     WHERE p.account_id = ANY (v_accs) AND (p_kind IS NULL OR t.kind = p_kind)
       AND (p_from IS NULL OR t.created_at >= p_from) AND (p_to IS NULL OR t.created_at < p_to);
    IF v_n > p_max THEN
        RETURN jsonb_build_object('too_large', true, 'count', v_n);
    END IF;
    SELECT coalesce(jsonb_agg(jsonb_build_array(p.id, t.created_at, t.kind,
               CASE a.kind WHEN 'worker' THEN 'available' WHEN 'worker_pending' THEN 'pending'
                           ELSE a.kind END,
               p.amount, p.balance_after, p.txn_id, t.memo) ORDER BY p.id DESC), '[]')
      INTO v_rows
      FROM postings p JOIN ledger_txns t ON t.id = p.txn_id JOIN accounts a ON a.id = p.account_id
     WHERE p.account_id = ANY (v_accs) AND (p_kind IS NULL OR t.kind = p_kind)
       AND (p_from IS NULL OR t.created_at >= p_from) AND (p_to IS NULL OR t.created_at < p_to);
    RETURN jsonb_build_object('sheet', 'statement',
        'columns', jsonb_build_array('id', 'created_at', 'kind', 'account', 'amount',
                                     'balance_after', 'txn_id', 'memo'),
        'rows', v_rows);
END
$$;

-- The ledger export of a subtree and time range, one row per posting of every sealed
-- transaction up to the anchor checkpoint: the columns of the CSV export
-- (gp_audit_export_page), every page at once.
CREATE FUNCTION gp_audit_export_xlsx(p_actor bigint, p_unit bigint, p_from timestamptz,
                                     p_to timestamptz, p_anchor bigint, p_max int)
RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
DECLARE
    u org_units := gp_require_unit(p_actor, p_unit, gp_audit_roles());
    c audit_checkpoints := gp_audit_anchor(p_anchor);
    v_n bigint;
    v_rows jsonb;
BEGIN
    IF c.size IS NULL THEN
        PERFORM gp_raise('409', 'no_checkpoint', 'no signed checkpoint yet', 'checkpoint');
    END IF;
    SELECT count(*) INTO v_n
      FROM audit_leaves l JOIN ledger_txns t ON t.id = l.txn_id JOIN postings p ON p.txn_id = t.id
     WHERE l.idx < c.size AND (p_from IS NULL OR t.created_at >= p_from)
       AND (p_to IS NULL OR t.created_at < p_to)
       AND EXISTS (SELECT 1 FROM postings q JOIN accounts a ON a.id = q.account_id
                     JOIN org_units au ON au.id = a.unit_id
                    WHERE q.txn_id = l.txn_id AND au.path <@ u.path);
    IF v_n > p_max THEN
        RETURN jsonb_build_object('too_large', true, 'count', v_n);
    END IF;
    SELECT coalesce(jsonb_agg(jsonb_build_array(l.idx, t.id, t.kind, gp_audit_ts(t.created_at),
               t.actor_id, t.memo, p.id, p.account_id, a.kind, p.amount, p.account_version,
               p.balance_after, encode(l.hash, 'hex')) ORDER BY l.idx, p.account_id), '[]')
      INTO v_rows
      FROM audit_leaves l JOIN ledger_txns t ON t.id = l.txn_id
      JOIN postings p ON p.txn_id = t.id LEFT JOIN accounts a ON a.id = p.account_id
     WHERE l.idx < c.size AND (p_from IS NULL OR t.created_at >= p_from)
       AND (p_to IS NULL OR t.created_at < p_to)
       AND EXISTS (SELECT 1 FROM postings q JOIN accounts qa ON qa.id = q.account_id
                     JOIN org_units au ON au.id = qa.unit_id
                    WHERE q.txn_id = l.txn_id AND au.path <@ u.path);
    RETURN jsonb_build_object('sheet', 'ledger',
        'columns', jsonb_build_array('log_index', 'txn_id', 'kind', 'created_at', 'actor_id',
                                     'memo', 'posting_id', 'account_id', 'account_kind', 'amount',
                                     'version', 'balance_after', 'leaf_hash'),
        'rows', v_rows, 'anchor_size', c.size);
END
$$;
