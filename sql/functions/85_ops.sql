-- sql/functions/85_ops.sql
-- What an operator watches that only the database knows (server/sweeps.c, "ops_gauges", puts it
-- into /metrics; the alerting rules in deploy/prometheus/alerts.yml read it).

-- -> {"timer_lag_seconds": how long the most overdue durable timer has been due (0: none due),
--     "audit_checkpoint_age_seconds": age of the newest checkpoint while ledger transactions
--     wait for one (0: none waits), "audit_checkpoint_at": epoch seconds of the newest
--     checkpoint (0: none), "audit_alarm": the tamper alarm stands}.
-- Each probe reads the first row of a partial index the sweeps use themselves, so this stays
-- cheap however large the tables grow.
CREATE FUNCTION gp_ops_gauges() RETURNS jsonb LANGUAGE sql STABLE AS $$
    WITH due AS (
        SELECT min(d) AS oldest FROM (
            (SELECT due_at FROM assignments WHERE state = 'claimed' AND due_at <= now()
              ORDER BY due_at LIMIT 1)
            UNION ALL
            (SELECT review_due_at FROM assignments
              WHERE state = 'submitted' AND review_due_at <= now()
              ORDER BY review_due_at LIMIT 1)
            UNION ALL
            (SELECT ends_at FROM tasks WHERE status = 'open' AND ends_at <= now()
              ORDER BY ends_at LIMIT 1)
            UNION ALL
            (SELECT due_at FROM pending_points WHERE vest_txn_id IS NULL AND due_at <= now()
              ORDER BY due_at LIMIT 1)
            UNION ALL
            (SELECT expires_at FROM point_lots WHERE remaining > 0 AND expires_at <= now()
              ORDER BY expires_at LIMIT 1)
            UNION ALL
            (SELECT expires_at FROM vouchers WHERE state = 'issued' AND expires_at <= now()
              ORDER BY expires_at LIMIT 1)) x (d)
    ), cp AS (
        SELECT max(size) AS size, max(at) AS at FROM audit_checkpoints
    ), head AS (
        SELECT h.size, h.last_xid, h.alarm IS NOT NULL AS alarm FROM audit_head h
    ), waiting AS (
        -- transactions not sealed yet, or sealed beyond the newest checkpoint
        SELECT EXISTS (SELECT 1 FROM ledger_txns t, head
                        WHERE head.last_xid IS NULL OR t.xid > head.last_xid)
               OR (SELECT head.size > coalesce(cp.size, 0) FROM head, cp) AS pending
    )
    SELECT jsonb_build_object(
        'timer_lag_seconds',
            coalesce(extract(epoch FROM now() - (SELECT oldest FROM due)), 0),
        'audit_checkpoint_age_seconds',
            CASE WHEN (SELECT pending FROM waiting)
                 THEN extract(epoch FROM now() - coalesce((SELECT at FROM cp),
                     (SELECT created_at FROM ledger_txns ORDER BY id LIMIT 1)))
                 ELSE 0 END,
        'audit_checkpoint_at', coalesce(extract(epoch FROM (SELECT at FROM cp)), 0),
        'audit_alarm', coalesce((SELECT alarm FROM head), false))
$$;
