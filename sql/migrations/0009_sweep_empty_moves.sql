-- sql/0009_sweep_empty_moves.sql
-- gp_assignments_move returns at once when it has nothing to move (make bench found each
-- timer sweep spending ~122 ms per task on empty moves after a bulk load, until ANALYZE).
-- The rest of the function is unchanged from sql/0004_tasks.sql.

CREATE OR REPLACE FUNCTION gp_assignments_move(p_task bigint, p_ids bigint[], p_from text, p_to text,
                                    p_actor bigint, p_timer text, p_reason text,
                                    p_award_txns bigint[] DEFAULT NULL)
RETURNS int LANGUAGE plpgsql AS $$
DECLARE
    v_n int;
BEGIN
    -- The sweep calls this for every due task, usually with nothing to move in one of the two
    -- directions: return before the planner gets a chance to pick a scan of all assignments
    -- (seen after bulk inserts, with stale statistics: 122 ms per task for nothing).
    IF coalesce(cardinality(p_ids), 0) = 0 THEN
        RETURN 0;
    END IF;
    IF (p_from, p_to) NOT IN (('claimed', 'expired'), ('submitted', 'approved')) THEN
        PERFORM gp_raise('409', 'invalid_transition',
            format('cannot move assignments from %s to %s in bulk', p_from, p_to), 'state');
    END IF;
    WITH moved AS (
        UPDATE assignments a SET
            state = p_to,
            ended_at = CASE WHEN p_to = 'expired' THEN now() ELSE a.ended_at END,
            decided_at = CASE WHEN p_to = 'approved' THEN now() ELSE a.decided_at END,
            decided_by = CASE WHEN p_to = 'approved' THEN p_actor ELSE a.decided_by END,
            reason = p_reason,
            award_txn = CASE WHEN p_to = 'approved' THEN x.award ELSE a.award_txn END,
            version = a.version + 1
          FROM unnest(p_ids, coalesce(p_award_txns, array_fill(NULL::bigint,
                                                               ARRAY[cardinality(p_ids)])))
               AS x (id, award)
         WHERE a.id = x.id AND a.task_id = p_task AND a.state = p_from
        RETURNING a.id, a.worker_id, a.award_txn),
    ev AS (
        INSERT INTO assignment_events (assignment_id, task_id, worker_id, actor_id, timer,
                                       from_state, to_state, reason)
        SELECT m.id, p_task, m.worker_id, p_actor, CASE WHEN p_actor IS NULL THEN p_timer END,
               p_from, p_to, p_reason
          FROM moved m ORDER BY m.id),
    ob AS (
        INSERT INTO outbox (topic, person_id, payload)
        SELECT 'assignment.' || p_to, m.worker_id,
               jsonb_build_object('assignment_id', m.id, 'task_id', p_task, 'from', p_from,
                                  'to', p_to, 'reason', p_reason, 'award_txn', m.award_txn,
                                  'at', now())
          FROM moved m ORDER BY m.id)
    SELECT count(*) INTO v_n FROM moved;
    IF v_n > 0 THEN
        UPDATE tasks SET
            claimed   = claimed   - CASE WHEN p_from = 'claimed' THEN v_n ELSE 0 END,
            submitted = submitted - CASE WHEN p_from = 'submitted' THEN v_n ELSE 0 END,
            expired   = expired   + CASE WHEN p_to = 'expired' THEN v_n ELSE 0 END,
            approved  = approved  + CASE WHEN p_to = 'approved' THEN v_n ELSE 0 END,
            version = version + 1, updated_at = now()
         WHERE id = p_task;
    END IF;
    RETURN v_n;
END
$$;
