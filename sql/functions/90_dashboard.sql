-- sql/functions/90_dashboard.sql -- the street dashboard (一屏统揽, issue 14).
-- Reads only the counters of sql/migrations/0018_dashboard.sql, which triggers keep in the
-- transactions of the events: a subtree's figures are the sum of its units' rows, never a
-- scan of the ledger. See the migration's header for what counts where.

-- The figures of a set of dash_daily rows, as the API names them.
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
    v_stock record;
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

    -- One pass over the rows of the subtree and window (an index-only scan of
    -- dash_daily_street_day: the subtree by equality on the rows' ancestor columns), summed by
    -- day (the trend) and by the child they roll up to (the children), in one aggregation.
    WITH sums AS (
        SELECT GROUPING(r.day) AS by_child, r.day, r.child,
               sum(r.tasks_published) tp, sum(r.slots_published) sp, sum(r.claimed) c,
               sum(r.reported) r, sum(r.approved) a, sum(r.rejected) rj, sum(r.flagged) f,
               sum(r.points_issued) pi, sum(r.points_redeemed) pr, sum(r.redemptions) rd,
               sum(r.active_workers) aw
          FROM (SELECT CASE u.level WHEN 'street' THEN d.community_id
                                    WHEN 'community' THEN d.grid_id
                                    WHEN 'grid' THEN nullif(d.unit_id, d.grid_id) END AS child,
                       d.day, d.tasks_published, d.slots_published, d.claimed, d.reported,
                       d.approved, d.rejected, d.flagged, d.points_issued, d.points_redeemed,
                       d.redemptions, d.active_workers
                  FROM dash_daily d
                 WHERE d.street_id = v_street AND d.day BETWEEN v_from AND v_today
                   AND CASE u.level WHEN 'street' THEN true
                                    WHEN 'community' THEN d.community_id = u.id
                                    WHEN 'grid' THEN d.grid_id = u.id
                                    ELSE d.unit_id = u.id END) r
         GROUP BY GROUPING SETS ((r.day), (r.child))),
    by_day AS (SELECT * FROM sums WHERE by_child = 0),
    by_child AS (SELECT * FROM sums WHERE by_child = 1 AND child IS NOT NULL)
    SELECT (SELECT jsonb_agg(gp_dash_figures(x.tp, x.sp, x.c, x.r, x.a, x.rj, x.f, x.pi, x.pr,
                                             x.rd, x.aw) || jsonb_build_object('date', g.d::date)
                             ORDER BY g.d)
              FROM generate_series(v_from, v_today, interval '1 day') AS g (d)
              LEFT JOIN by_day x ON x.day = g.d::date),
           (SELECT coalesce(jsonb_agg(gp_dash_figures(x.tp, x.sp, x.c, x.r, x.a, x.rj, x.f,
                                                      x.pi, x.pr, x.rd, x.aw)
                       || jsonb_build_object('unit_id', c.id, 'name', c.name, 'level', c.level,
                              'workers', coalesce(w.workers, 0),
                              'completion_rate', CASE WHEN coalesce(x.c, 0) > 0
                                  THEN round(x.a::numeric / x.c, 4) END,
                              'points_per_worker', CASE WHEN coalesce(w.workers, 0) > 0
                                  THEN round(coalesce(x.pi, 0)::numeric / w.workers, 2) END)
                       ORDER BY c.id), '[]')
              FROM org_units c
              LEFT JOIN by_child x ON x.child = c.id
              LEFT JOIN LATERAL (SELECT sum(du.workers) AS workers
                                   FROM dash_units du JOIN org_units o ON o.id = du.unit_id
                                  WHERE du.street_id = v_street AND o.path <@ c.path) w ON true
             WHERE c.parent_id = u.id)
      INTO v_trend, v_children;
    v_today_fig := (v_trend -> -1) - 'date';

    SELECT coalesce(sum(points_pending), 0) AS pending, coalesce(sum(workers), 0) AS workers
      INTO v_stock
      FROM dash_units du JOIN org_units o ON o.id = du.unit_id
     WHERE du.street_id = v_street AND o.path <@ u.path;

    SELECT jsonb_build_object('today', coalesce((v_today_fig ->> 'flagged')::bigint, 0),
               'items', coalesce(jsonb_agg(jsonb_build_object(
                   'rule', 'flagged_report', 'flags', f.flags, 'report_id', f.report_id,
                   'task_id', f.task_id, 'worker_id', f.worker_id, 'unit_id', f.unit_id,
                   'at', f.at) ORDER BY f.at DESC), '[]'))
      INTO v_anom
      FROM (SELECT df.* FROM dash_flags df JOIN org_units o ON o.id = df.unit_id
             WHERE df.street_id = v_street AND o.path <@ u.path
             ORDER BY df.at DESC LIMIT 10) f;

    SELECT coalesce(jsonb_agg(jsonb_build_object('merchant_id', x.merchant_id, 'name', m.name,
                      'points', x.points, 'count', x.count) ORDER BY x.points DESC, x.merchant_id),
                    '[]')
      INTO v_merchants
      FROM (SELECT dm.merchant_id, sum(dm.points) AS points, sum(dm.count) AS count
              FROM dash_merchant_daily dm JOIN org_units o ON o.id = dm.unit_id
             WHERE dm.street_id = v_street AND dm.day BETWEEN v_from AND v_today
               AND o.path <@ u.path
             GROUP BY dm.merchant_id
             ORDER BY sum(dm.points) DESC, dm.merchant_id LIMIT 20) x
      JOIN merchants m ON m.id = x.merchant_id;

    RETURN jsonb_build_object(
        'unit', jsonb_build_object('id', u.id, 'name', u.name, 'level', u.level),
        'date', v_today, 'days', p_days, 'as_of', now(), 'refresh_s', p_refresh_s,
        'today', v_today_fig,
        'points_pending', v_stock.pending, 'workers', v_stock.workers,
        'trend', v_trend, 'children', v_children, 'anomalies', v_anom,
        'redemptions', jsonb_build_object(
            'today_points', coalesce((v_today_fig ->> 'points_redeemed')::bigint, 0),
            'today_count', coalesce((v_today_fig ->> 'redemptions')::bigint, 0),
            'merchants', v_merchants));
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
