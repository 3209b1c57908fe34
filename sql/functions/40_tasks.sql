-- sql/functions/40_tasks.sql
-- The work loop (tables and rules: sql/migrations/0004_tasks.sql; prose: docs/TASKS.md):
-- tasks, assignments, reports, check-ins, their history and the durable timers. Lock order
-- everywhere: the task row, then its assignments, then the ledger (30_ledger's seam).

-- Great-circle distance in metres (haversine, mean Earth radius).
CREATE FUNCTION gp_distance_m(p_lat1 double precision, p_lng1 double precision,
                              p_lat2 double precision, p_lng2 double precision)
RETURNS double precision LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT 2 * 6371008.8 * asin(least(1.0, sqrt(
               power(sin(radians(p_lat2 - p_lat1) / 2), 2)
             + cos(radians(p_lat1)) * cos(radians(p_lat2))
               * power(sin(radians(p_lng2 - p_lng1) / 2), 2))))
$$;

------------------------------------------------------------------------------------------
-- JSON shapes. Declared STABLE, not IMMUTABLE: jsonb_build_object and timestamps as JSON
-- depend on settings, and the planner inlines a one-expression sql function only when it is
-- declared no less volatile than its body -- an IMMUTABLE one around STABLE calls is never
-- inlined and is planned again in every transaction.
------------------------------------------------------------------------------------------
-- Claimable slots as the server's Redis gate sees them: 0 unless the task is open. A pure
-- function of the row, so one slots_version always means one free_slots value.
CREATE FUNCTION gp_task_free_slots(t tasks) RETURNS int LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN t.status = 'open' THEN t.slots - t.occupied ELSE 0 END
$$;

-- The task's assignments per state. The row keeps occupied (claimed + submitted + approved)
-- and the final counters; a report (claimed -> submitted) does not write it, so "submitted" is
-- counted here (nothing to count once occupied = approved) and "claimed" is what remains.
CREATE FUNCTION gp_task_counts(t tasks) RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_sub int := 0;
BEGIN
    IF t.occupied > t.approved THEN
        -- (at most occupied - approved: a caller may hold a row read before a late sync)
        SELECT least(count(*), t.occupied - t.approved) INTO v_sub FROM assignments a
         WHERE a.task_id = t.id AND a.state = 'submitted';
    END IF;
    RETURN jsonb_build_object('claimed', t.occupied - t.approved - v_sub, 'submitted', v_sub,
                              'approved', t.approved, 'rejected', t.rejected,
                              'released', t.released, 'expired', t.expired);
END
$$;

CREATE FUNCTION gp_task_slots_json(t tasks) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('task_id', t.id, 'unit_id', t.unit_id,
                              'free_slots', gp_task_free_slots(t), 'slots_version', t.version)
$$;

CREATE FUNCTION gp_secs(p interval) RETURNS bigint LANGUAGE sql IMMUTABLE AS $$
    SELECT extract(epoch FROM p)::bigint
$$;

-- p_staff: the full record (staff and auditors); otherwise the worker's view, without the
-- ledger references and the publisher.
CREATE FUNCTION gp_task_json(t tasks, p_staff boolean DEFAULT true) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'id', t.id, 'unit_id', t.unit_id, 'title', t.title, 'description', t.description,
        'category', t.category, 'reward', t.reward, 'slots', t.slots,
        'required_tags', to_jsonb(t.required_tags), 'lat', t.lat, 'lng', t.lng,
        'geofence_m', t.geofence_m, 'geofence_enforced', t.geofence_enforced,
        'starts_at', t.starts_at, 'ends_at', t.ends_at,
        'claim_ttl_s', gp_secs(t.claim_ttl), 'review_window_s', gp_secs(t.review_window),
        'sync_grace_s', gp_secs(t.sync_grace),
        'evidence_photos', t.evidence_photos, 'evidence_checkin', t.evidence_checkin,
        'status', t.status,
        'claimable', t.status = 'open' AND now() >= t.starts_at AND now() < t.ends_at
                     AND gp_task_free_slots(t) > 0,
        'counts', gp_task_counts(t),
        'remaining', t.slots - t.occupied,
        'free_slots', gp_task_free_slots(t), 'version', t.version,
        'closed_at', t.closed_at, 'cancelled_at', t.cancelled_at,
        'cancel_reason', t.cancel_reason, 'created_at', t.created_at,
        'updated_at', t.updated_at)
        || CASE WHEN p_staff THEN jsonb_build_object(
               'publisher_id', t.publisher_id, 'reservation_txn', t.reservation_txn,
               'release_after', t.release_after, 'released_at', t.released_at,
               'release_txn', t.release_txn)
           ELSE '{}'::jsonb END
$$;

CREATE FUNCTION gp_assignment_json(a assignments) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'id', a.id, 'task_id', a.task_id, 'worker_id', a.worker_id, 'state', a.state,
        'claimed_at', a.claimed_at, 'due_at', a.due_at, 'ended_at', a.ended_at,
        'submitted_at', a.submitted_at, 'review_due_at', a.review_due_at,
        'decided_at', a.decided_at, 'decided_by', a.decided_by, 'reason', a.reason,
        'report_id', a.report_id, 'award_txn', a.award_txn, 'version', a.version)
$$;

CREATE FUNCTION gp_report_json(r reports) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'id', r.id, 'client_report_id', r.client_report_id, 'assignment_id', r.assignment_id,
        'task_id', r.task_id, 'made_at', r.made_at, 'received_at', r.received_at,
        'lat', r.lat, 'lng', r.lng, 'distance_m', round(r.distance_m::numeric, 1),
        'notes', r.notes, 'evidence', r.evidence, 'flags', to_jsonb(r.flags),
        'device_id', r.device_id)
$$;

CREATE FUNCTION gp_checkin_json(c checkins) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'id', c.id, 'assignment_id', c.assignment_id, 'at', c.at, 'received_at', c.received_at,
        'lat', c.lat, 'lng', c.lng, 'distance_m', round(c.distance_m::numeric, 1),
        'flags', to_jsonb(c.flags))
$$;

-- The task, or 404 task_not_found when the actor may not see it. Modes:
--   'staff'  grid staff, community or street admin over the task's unit (changes, reviews)
--   'read'   as 'staff', or an auditor over the unit, or a worker whose area it reaches, or
--            anyone holding an assignment on it
CREATE FUNCTION gp_task_require(p_actor bigint, p_task bigint, p_mode text) RETURNS tasks
LANGUAGE plpgsql STABLE AS $$
DECLARE
    t tasks;
BEGIN
    SELECT * INTO t FROM tasks WHERE id = p_task;
    IF FOUND THEN
        IF gp_has_role(p_actor, CASE WHEN p_mode = 'staff' THEN gp_staff_roles()
                                     ELSE gp_reader_roles() END, t.unit_id) THEN
            RETURN t;
        END IF;
        IF p_mode = 'read' AND (gp_task_in_area(p_actor, t.unit_id) OR EXISTS (
               SELECT 1 FROM assignments a WHERE a.task_id = t.id AND a.worker_id = p_actor)) THEN
            RETURN t;
        END IF;
    END IF;
    PERFORM gp_raise('404', 'task_not_found', 'task not found', 'task_id');
    RETURN NULL;
END
$$;

-- Moves one assignment to p_to: checks the transition, keeps the task's counters exact (a
-- move into a slot-holding state from a state that holds none takes a free slot or fails
-- with 409 slot_reassigned), stamps the times, writes the history and the outbox.
-- p_actor NULL = the timer p_timer.
CREATE FUNCTION gp_assignment_set_state(p_assignment bigint, p_to text, p_actor bigint,
                                        p_timer text, p_reason text,
                                        p_award_txn bigint DEFAULT NULL)
RETURNS assignments LANGUAGE plpgsql AS $$
DECLARE
    a assignments;
    v_from text;
    v_review interval;
BEGIN
    SELECT * INTO a FROM assignments WHERE id = p_assignment FOR UPDATE;
    IF NOT FOUND THEN
        PERFORM gp_raise('404', 'assignment_not_found', 'assignment not found', 'assignment_id');
    END IF;
    v_from := a.state;
    IF NOT EXISTS (SELECT 1 FROM assignment_transitions
                    WHERE from_state = v_from AND to_state = p_to) THEN
        PERFORM gp_raise('409', 'invalid_transition',
            format('an assignment cannot go from %s to %s', v_from, p_to), 'state');
    END IF;
    IF v_from = 'claimed' AND p_to = 'submitted' THEN
        -- The slot stays occupied: no counter of the task row changes.
        SELECT review_window INTO v_review FROM tasks WHERE id = a.task_id;
    ELSE
        UPDATE tasks SET
            occupied = occupied + (p_to IN ('claimed', 'submitted', 'approved'))::int
                                - (v_from IN ('claimed', 'submitted', 'approved'))::int,
            approved = approved + (p_to = 'approved')::int - (v_from = 'approved')::int,
            rejected = rejected + (p_to = 'rejected')::int - (v_from = 'rejected')::int,
            released = released + (p_to = 'released')::int - (v_from = 'released')::int,
            expired  = expired  + (p_to = 'expired')::int  - (v_from = 'expired')::int,
            version = version + 1, updated_at = now()
         WHERE id = a.task_id
           AND (v_from IN ('claimed', 'submitted', 'approved')
                OR p_to NOT IN ('claimed', 'submitted', 'approved')
                OR occupied < slots)
        RETURNING review_window INTO v_review;
        IF NOT FOUND THEN
            PERFORM gp_raise('409', 'slot_reassigned',
                'the slot of this claim was given to someone else after it expired',
                'assignment_id');
        END IF;
    END IF;
    UPDATE assignments SET
        state = p_to,
        ended_at = CASE WHEN p_to IN ('expired', 'released') THEN now() ELSE ended_at END,
        submitted_at = CASE WHEN p_to = 'submitted' THEN now() ELSE submitted_at END,
        review_due_at = CASE WHEN p_to = 'submitted' THEN now() + v_review ELSE review_due_at END,
        decided_at = CASE WHEN p_to IN ('approved', 'rejected') THEN now() ELSE decided_at END,
        decided_by = CASE WHEN p_to IN ('approved', 'rejected') THEN p_actor ELSE decided_by END,
        reason = CASE WHEN p_to = 'submitted' THEN NULL ELSE p_reason END,
        award_txn = coalesce(p_award_txn, award_txn),
        version = version + 1
     WHERE id = a.id
    RETURNING * INTO a;
    INSERT INTO assignment_events (assignment_id, task_id, worker_id, actor_id, timer,
                                   from_state, to_state, reason, street_id)
    VALUES (a.id, a.task_id, a.worker_id, p_actor, CASE WHEN p_actor IS NULL THEN p_timer END,
            v_from, p_to, p_reason, a.street_id);
    -- A notice for the worker when someone else moved their assignment; their own moves
    -- (a release) are answered to them and recorded by the event row.
    IF p_actor IS DISTINCT FROM a.worker_id THEN
        PERFORM gp_outbox('assignment.' || p_to, a.worker_id,
            jsonb_build_object('assignment_id', a.id, 'task_id', a.task_id, 'from', v_from,
                               'to', p_to, 'reason', p_reason, 'award_txn', a.award_txn,
                               'at', now()));
    END IF;
    RETURN a;
END
$$;

-- Moves many assignments of one task at once from p_from to p_to, for the transitions that
-- free a slot or keep it (claimed -> expired, submitted -> approved): the same effects as
-- gp_assignment_set_state on each, with one counter update of the task row. Assignments of
-- p_ids no longer in p_from are left alone. p_award_txns: the award of each (approvals).
-- Returns how many moved.
CREATE FUNCTION gp_assignments_move(p_task bigint, p_ids bigint[], p_from text, p_to text,
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
        RETURNING a.id, a.worker_id, a.award_txn, a.street_id),
    ev AS (
        INSERT INTO assignment_events (assignment_id, task_id, worker_id, actor_id, timer,
                                       from_state, to_state, reason, street_id)
        SELECT m.id, p_task, m.worker_id, p_actor, CASE WHEN p_actor IS NULL THEN p_timer END,
               p_from, p_to, p_reason, m.street_id
          FROM moved m ORDER BY m.id),
    ob AS (
        INSERT INTO outbox (topic, person_id, payload, street_id) -- the worker's = the task's
        SELECT 'assignment.' || p_to, m.worker_id,
               jsonb_build_object('assignment_id', m.id, 'task_id', p_task, 'from', p_from,
                                  'to', p_to, 'reason', p_reason, 'award_txn', m.award_txn,
                                  'at', now()), m.street_id
          FROM moved m ORDER BY m.id)
    SELECT count(*) INTO v_n FROM moved;
    IF v_n > 0 THEN
        -- claimed -> expired frees the slots; submitted -> approved keeps them.
        UPDATE tasks SET
            occupied = occupied - CASE WHEN p_to = 'expired' THEN v_n ELSE 0 END,
            expired  = expired  + CASE WHEN p_to = 'expired' THEN v_n ELSE 0 END,
            approved = approved + CASE WHEN p_to = 'approved' THEN v_n ELSE 0 END,
            version = version + 1, updated_at = now()
         WHERE id = p_task;
    END IF;
    RETURN v_n;
END
$$;

-- Moves a task to p_to (checked against task_transitions). Closing or cancelling expires the
-- live claims and fixes release_after: the reservation is kept until no report made during
-- an expired claim can still be synced (its claim end + sync_grace).
CREATE FUNCTION gp_task_set_state(p_task bigint, p_to text, p_actor bigint, p_timer text,
                                  p_reason text)
RETURNS tasks LANGUAGE plpgsql AS $$
DECLARE
    t tasks;
    v_from text;
BEGIN
    SELECT * INTO t FROM tasks WHERE id = p_task FOR UPDATE;
    v_from := t.status;
    IF NOT EXISTS (SELECT 1 FROM task_transitions WHERE from_state = v_from AND to_state = p_to)
    THEN
        PERFORM gp_raise('409', 'task_not_open', format('the task is %s', v_from), 'task_id');
    END IF;
    PERFORM gp_assignments_move(p_task,
        ARRAY(SELECT id FROM assignments WHERE task_id = p_task AND state = 'claimed'
               ORDER BY id FOR UPDATE),
        'claimed', 'expired', p_actor, p_timer,
        CASE p_to WHEN 'cancelled' THEN 'task_cancelled' ELSE 'task_closed' END);
    UPDATE tasks SET
        status = p_to,
        closed_at = CASE WHEN p_to = 'closed' THEN now() END,
        cancelled_at = CASE WHEN p_to = 'cancelled' THEN now() END,
        cancel_reason = CASE WHEN p_to = 'cancelled' THEN p_reason END,
        release_after = greatest(now(), (
            SELECT max(least(a.due_at, coalesce(a.ended_at, a.due_at)) + tasks.sync_grace)
              FROM assignments a WHERE a.task_id = p_task AND a.state = 'expired')),
        version = version + 1, updated_at = now()
     WHERE id = p_task
    RETURNING * INTO t;
    INSERT INTO task_events (task_id, actor_id, timer, event, from_state, to_state, reason,
                             street_id)
    VALUES (p_task, p_actor, CASE WHEN p_actor IS NULL THEN p_timer END, p_to, v_from, p_to,
            p_reason, t.street_id);
    PERFORM gp_outbox('task.' || p_to, t.publisher_id,
        jsonb_build_object('task_id', t.id, 'unit_id', t.unit_id, 'from', v_from, 'to', p_to,
                           'reason', p_reason, 'at', now()));
    RETURN t;
END
$$;

-- Returns the unused reservation once the task is final: closed or cancelled, nothing live or
-- submitted, and past release_after. Returns the task row (released_at set when it happened).
CREATE FUNCTION gp_task_settle(p_task bigint, p_actor bigint, p_timer text) RETURNS tasks
LANGUAGE plpgsql AS $$
DECLARE
    t tasks;
    v_txn bigint;
BEGIN
    SELECT * INTO t FROM tasks WHERE id = p_task FOR UPDATE;
    -- (occupied > approved: something is still claimed or submitted)
    IF t.status = 'open' OR t.released_at IS NOT NULL OR t.occupied > t.approved
       OR t.release_after > now() THEN
        RETURN t;
    END IF;
    v_txn := gp_task_release(t.id, t.unit_id, p_actor);
    UPDATE tasks SET released_at = now(), release_txn = v_txn, version = version + 1,
                     updated_at = now()
     WHERE id = p_task RETURNING * INTO t;
    INSERT INTO task_events (task_id, actor_id, timer, event, from_state, to_state, data,
                             street_id)
    VALUES (p_task, p_actor, CASE WHEN p_actor IS NULL THEN p_timer END, 'reservation_released',
            t.status, t.status, jsonb_build_object('release_txn', v_txn), t.street_id);
    RETURN t;
END
$$;

-- After a decision: close the task when every slot is approved, then settle it if final.
CREATE FUNCTION gp_task_after_change(p_task bigint, p_actor bigint, p_timer text) RETURNS tasks
LANGUAGE plpgsql AS $$
DECLARE
    t tasks;
BEGIN
    SELECT * INTO t FROM tasks WHERE id = p_task FOR UPDATE;
    IF t.status = 'open' AND t.approved >= t.slots THEN
        PERFORM gp_task_set_state(p_task, 'closed', p_actor, p_timer, 'all_slots_approved');
    END IF;
    RETURN gp_task_settle(p_task, p_actor, p_timer);
END
$$;

------------------------------------------------------------------------------------------
-- Publishing and editing
------------------------------------------------------------------------------------------
CREATE FUNCTION gp_task_fields() RETURNS text[] LANGUAGE sql IMMUTABLE AS $$
    SELECT ARRAY['unit_id', 'title', 'description', 'category', 'reward', 'slots',
                 'required_tags', 'lat', 'lng', 'geofence_m', 'geofence_enforced', 'starts_at',
                 'ends_at', 'claim_ttl_s', 'review_window_s', 'sync_grace_s', 'evidence_photos',
                 'evidence_checkin']
$$;

-- Applies p_args (already checked for unknown keys) to p_base and validates the meaning of
-- the result. p_create: publication (required fields, defaults) rather than an edit, where an
-- absent key keeps its value and null clears a nullable field (lat, lng, geofence_m).
CREATE FUNCTION gp_task_apply_args(p_args jsonb, p_base tasks, p_create boolean) RETURNS tasks
LANGUAGE plpgsql STABLE AS $$
DECLARE
    t tasks := p_base;
BEGIN
    IF p_create THEN
        t.description := '';
        t.required_tags := '{}';
        t.starts_at := now();
        t.sync_grace := interval '7 days';
        t.evidence_photos := 0;
        t.evidence_checkin := false;
        t.geofence_enforced := false;
    END IF;
    IF p_create OR p_args ? 'unit_id' THEN
        t.unit_id := gp_targ_int(p_args, 'unit_id', 1, 9223372036854775807, true);
    END IF;
    IF p_create OR p_args ? 'title' THEN
        t.title := gp_targ_text(p_args, 'title', 1, 200, true);
    END IF;
    IF p_args ? 'description' THEN
        t.description := coalesce(gp_targ_text(p_args, 'description', 0, 5000), '');
    END IF;
    IF p_create OR p_args ? 'category' THEN
        t.category := gp_targ_text(p_args, 'category', 1, 32, true);
    END IF;
    IF p_create OR p_args ? 'reward' THEN
        t.reward := gp_targ_int(p_args, 'reward', 1, 9223372036854775807, true);
    END IF;
    IF p_create OR p_args ? 'slots' THEN
        t.slots := gp_targ_int(p_args, 'slots', 1, 10000, true);
    END IF;
    IF p_args ? 'required_tags' THEN
        t.required_tags := gp_targ_tags(p_args, 'required_tags');
    END IF;
    IF p_args ? 'lat' THEN
        t.lat := gp_targ_num(p_args, 'lat', -90, 90);
    END IF;
    IF p_args ? 'lng' THEN
        t.lng := gp_targ_num(p_args, 'lng', -180, 180);
    END IF;
    IF p_args ? 'geofence_m' THEN
        t.geofence_m := gp_targ_int(p_args, 'geofence_m', 10, 50000);
    END IF;
    IF p_args ? 'geofence_enforced' THEN
        t.geofence_enforced := coalesce(gp_targ_bool(p_args, 'geofence_enforced'), false);
    END IF;
    IF p_args ? 'starts_at' THEN
        t.starts_at := coalesce(gp_targ_ts(p_args, 'starts_at', NOT p_create), t.starts_at);
    END IF;
    IF p_create OR p_args ? 'ends_at' THEN
        t.ends_at := gp_targ_ts(p_args, 'ends_at', true);
    END IF;
    IF p_create OR p_args ? 'claim_ttl_s' THEN
        t.claim_ttl := make_interval(secs => gp_targ_int(p_args, 'claim_ttl_s', 1, 2592000, true));
    END IF;
    IF p_create OR p_args ? 'review_window_s' THEN
        t.review_window := make_interval(secs =>
            gp_targ_int(p_args, 'review_window_s', 1, 2592000, true));
    END IF;
    IF p_args ? 'sync_grace_s' THEN
        t.sync_grace := make_interval(secs => gp_targ_int(p_args, 'sync_grace_s', 0, 2592000, true));
    END IF;
    IF p_args ? 'evidence_photos' THEN
        t.evidence_photos := gp_targ_int(p_args, 'evidence_photos', 0, 20, true);
    END IF;
    IF p_args ? 'evidence_checkin' THEN
        t.evidence_checkin := gp_targ_bool(p_args, 'evidence_checkin', true);
    END IF;

    -- Meaning, across fields.
    IF (t.lat IS NULL) <> (t.lng IS NULL) THEN
        PERFORM gp_raise('400', 'invalid_place', 'lat and lng must be given together',
                         CASE WHEN t.lat IS NULL THEN 'lat' ELSE 'lng' END);
    END IF;
    IF t.geofence_m IS NOT NULL AND t.lat IS NULL THEN
        PERFORM gp_raise('400', 'invalid_geofence', 'a geofence needs a place (lat, lng)',
                         'geofence_m');
    END IF;
    IF t.geofence_enforced AND t.geofence_m IS NULL THEN
        PERFORM gp_raise('400', 'invalid_geofence', 'an enforced geofence needs geofence_m',
                         'geofence_enforced');
    END IF;
    IF t.ends_at <= t.starts_at THEN
        PERFORM gp_raise('400', 'invalid_window', 'ends_at must be after starts_at', 'ends_at');
    END IF;
    IF (p_create OR p_args ? 'ends_at') AND t.ends_at <= now() THEN
        PERFORM gp_raise('400', 'invalid_window', 'ends_at must be in the future', 'ends_at');
    END IF;
    IF t.ends_at - t.starts_at > interval '366 days' THEN
        PERFORM gp_raise('400', 'invalid_window', 'a task may stay open for at most 366 days',
                         'ends_at');
    END IF;
    IF t.starts_at > now() + interval '366 days' THEN
        PERFORM gp_raise('400', 'invalid_window', 'starts_at is too far in the future',
                         'starts_at');
    END IF;
    IF t.slots::numeric * t.reward > 9223372036854775807 THEN
        PERFORM gp_raise('400', 'amount_overflow', 'slots times reward is too large', 'reward');
    END IF;
    RETURN t;
END
$$;

-- Publishes a task on p_args.unit_id (staff over that unit) and reserves slots x reward of the
-- unit's budget in the same transaction (402 insufficient_budget: nothing is created).
-- Idempotent on (p_idem_principal, p_idem_key).
CREATE FUNCTION gp_task_publish(p_actor bigint, p_args jsonb, p_idem_principal text DEFAULT NULL,
                                p_idem_key text DEFAULT NULL, p_request_hash text DEFAULT NULL)
RETURNS gp_reply LANGUAGE plpgsql AS $$
DECLARE
    v_principal text := gp_idem_principal(p_idem_principal, p_actor);
    v_replay jsonb;
    v_args jsonb;
    t tasks;
    v_txn bigint;
    v_resp jsonb;
    v_unit org_units;
    v_json jsonb;
    v_gate jsonb;
BEGIN
    v_replay := gp_idem_begin(v_principal, p_idem_key, p_request_hash);
    IF v_replay IS NOT NULL THEN
        RETURN gp_out(v_replay);
    END IF;
    v_args := gp_targ_object(p_args, gp_task_fields());
    v_unit := gp_require_unit(p_actor, gp_targ_int(v_args, 'unit_id', 1, 9223372036854775807,
                                                   true), gp_staff_roles());
    t := gp_task_apply_args(v_args, t, true);
    -- The task's id first, so that the reservation is made before the row is written and the
    -- row is written once, with its reservation (a row not yet inserted is nobody's lock).
    t.id := nextval('tasks_id_seq');
    v_txn := gp_task_reserve(t.id, t.unit_id, t.slots * t.reward, p_actor);
    INSERT INTO tasks (id, unit_id, publisher_id, title, description, category, reward, slots,
                       required_tags, lat, lng, geofence_m, geofence_enforced, starts_at, ends_at,
                       claim_ttl, review_window, sync_grace, evidence_photos, evidence_checkin,
                       reservation_txn, street_id)
    VALUES (t.id, t.unit_id, p_actor, t.title, t.description, t.category, t.reward, t.slots,
            t.required_tags, t.lat, t.lng, t.geofence_m, t.geofence_enforced, t.starts_at,
            t.ends_at, t.claim_ttl, t.review_window, t.sync_grace, t.evidence_photos,
            t.evidence_checkin, v_txn, ltree2text(subpath(v_unit.path, 0, 1))::bigint)
    RETURNING * INTO t;
    INSERT INTO task_events (task_id, actor_id, event, to_state, data, street_id)
    VALUES (t.id, p_actor, 'published', 'open',
            jsonb_build_object('reservation_txn', v_txn, 'amount', t.slots * t.reward),
            t.street_id);
    PERFORM gp_outbox('task.published', p_actor,
        jsonb_build_object('task_id', t.id, 'unit_id', t.unit_id, 'title', t.title,
                           'category', t.category, 'reward', t.reward, 'slots', t.slots,
                           'required_tags', to_jsonb(t.required_tags),
                           'starts_at', t.starts_at, 'ends_at', t.ends_at));
    v_json := gp_task_json(t);
    v_gate := gp_task_slots_json(t);
    PERFORM gp_audit(p_actor, 'task.publish', 'task', t.id::text, t.unit_id, NULL, v_json);
    v_resp := v_json || jsonb_build_object('gate', v_gate,
                                           'receipt', jsonb_build_object('txn_id', v_txn));
    RETURN gp_out(gp_idem_finish(v_principal, p_idem_key, p_request_hash, v_resp),
                  jsonb_build_object('gates', jsonb_build_array(v_gate)));
END
$$;

-- Edits an open task that nobody has ever claimed (409 task_claimed otherwise). p_args: any of
-- the publication fields but unit_id (a reservation stays bound to its unit: 400
-- field_not_editable), plus an optional "version" (409 version_conflict when the task has
-- changed since). A change of reward or slots reserves the difference, or releases it, in the
-- same transaction (402 insufficient_budget: nothing changes).
CREATE FUNCTION gp_task_update(p_actor bigint, p_task bigint, p_args jsonb) RETURNS gp_reply
LANGUAGE plpgsql AS $$
DECLARE
    v_args jsonb;
    t0 tasks;
    t tasks;
    v_release bigint;
    v_reserve bigint;
    v_receipt jsonb;
    v_before jsonb;
    v_after jsonb;
BEGIN
    v_args := gp_targ_object(p_args, gp_task_fields() || ARRAY['version']);
    PERFORM gp_task_require(p_actor, p_task, 'staff');
    IF v_args ? 'unit_id' THEN
        PERFORM gp_raise('400', 'field_not_editable',
            'a task cannot move to another unit; cancel it and publish a new one', 'unit_id');
    END IF;
    SELECT * INTO t0 FROM tasks WHERE id = p_task FOR UPDATE;
    IF v_args ? 'version'
       AND gp_targ_int(v_args, 'version', 1, 9223372036854775807, true) <> t0.version THEN
        PERFORM gp_raise('409', 'version_conflict', 'the task has changed; reload it', 'version');
    END IF;
    IF t0.status <> 'open' THEN
        PERFORM gp_raise('409', 'task_not_open', format('the task is %s', t0.status), 'task_id');
    END IF;
    IF t0.occupied + t0.rejected + t0.released + t0.expired > 0 THEN
        PERFORM gp_raise('409', 'task_claimed', 'a task cannot be edited once it has been claimed',
                         'task_id');
    END IF;
    t := gp_task_apply_args(v_args - 'version', t0, false);
    IF t.slots * t.reward > t0.slots * t0.reward THEN
        v_reserve := gp_task_reserve(t0.id, t0.unit_id, t.slots * t.reward - t0.slots * t0.reward,
                                     p_actor);
        t.reservation_txn := v_reserve;
        v_receipt := jsonb_build_object('txn_id', v_reserve);
    ELSIF t.slots * t.reward < t0.slots * t0.reward THEN
        v_release := gp_task_release(t0.id, t0.unit_id, p_actor,
                                     t0.slots * t0.reward - t.slots * t.reward);
        v_receipt := jsonb_build_object('txn_id', v_release);
    END IF;
    UPDATE tasks SET
        title = t.title, description = t.description,
        category = t.category, reward = t.reward, slots = t.slots,
        required_tags = t.required_tags, lat = t.lat, lng = t.lng, geofence_m = t.geofence_m,
        geofence_enforced = t.geofence_enforced, starts_at = t.starts_at, ends_at = t.ends_at,
        claim_ttl = t.claim_ttl, review_window = t.review_window, sync_grace = t.sync_grace,
        evidence_photos = t.evidence_photos, evidence_checkin = t.evidence_checkin,
        reservation_txn = t.reservation_txn, version = version + 1, updated_at = now()
     WHERE id = p_task
    RETURNING * INTO t;
    v_before := gp_task_json(t0);
    v_after := gp_task_json(t);
    INSERT INTO task_events (task_id, actor_id, event, from_state, to_state, street_id, data)
    VALUES (p_task, p_actor, 'updated', t.status, t.status, t.street_id,
            (SELECT jsonb_object_agg(k, jsonb_build_object('from', v_before -> k, 'to', v_after -> k))
               FROM jsonb_object_keys(v_after) k
              WHERE k = ANY (gp_task_fields() || ARRAY['claim_ttl_s', 'review_window_s',
                                                       'sync_grace_s', 'reservation_txn'])
                AND v_before -> k IS DISTINCT FROM v_after -> k));
    PERFORM gp_outbox('task.updated', t.publisher_id,
        jsonb_build_object('task_id', t.id, 'unit_id', t.unit_id, 'version', t.version));
    PERFORM gp_audit(p_actor, 'task.update', 'task', t.id::text, t.unit_id, v_before, v_after);
    RETURN gp_out(v_after || jsonb_build_object('gate', gp_task_slots_json(t), 'receipt', v_receipt),
                  jsonb_build_object('gates', jsonb_build_array(gp_task_slots_json(t))));
END
$$;

-- Cancels an open task (staff over its unit; p_reason required). Live claims expire (a report
-- made before the cancellation may still be synced); submitted reports are still reviewed;
-- the unused reservation is released once the task is final (docs/TASKS.md).
CREATE FUNCTION gp_task_cancel(p_actor bigint, p_task bigint, p_reason text) RETURNS gp_reply
LANGUAGE plpgsql AS $$
DECLARE
    t0 tasks;
    t tasks;
    v_reason text;
BEGIN
    PERFORM gp_task_require(p_actor, p_task, 'staff');
    v_reason := gp_targ_text(jsonb_build_object('reason', p_reason), 'reason', 1, 500, false);
    IF v_reason IS NULL THEN
        PERFORM gp_raise('400', 'reason_required', 'a reason is required to cancel a task', 'reason');
    END IF;
    SELECT * INTO t0 FROM tasks WHERE id = p_task FOR UPDATE;
    IF t0.status <> 'open' THEN
        PERFORM gp_raise('409', 'task_not_open', format('the task is %s', t0.status), 'task_id');
    END IF;
    PERFORM gp_task_set_state(p_task, 'cancelled', p_actor, NULL, v_reason);
    t := gp_task_after_change(p_task, p_actor, NULL);
    PERFORM gp_audit(p_actor, 'task.cancel', 'task', t.id::text, t.unit_id, gp_task_json(t0),
                     gp_task_json(t), v_reason);
    RETURN gp_out(gp_task_json(t) || jsonb_build_object('gate', gp_task_slots_json(t),
        'receipt', CASE WHEN t.released_at IS NOT NULL
                        THEN jsonb_build_object('release_txn', t.release_txn) END),
        jsonb_build_object('gates', jsonb_build_array(gp_task_slots_json(t))));
END
$$;

------------------------------------------------------------------------------------------
-- Reading tasks
------------------------------------------------------------------------------------------
-- Staff and auditors over the task's unit get the full record; a worker gets it when the task
-- reaches their area or they hold an assignment on it, with "can_claim", "missing_tags" and
-- "my_assignment" (their latest assignment on it). Anyone else: 404 task_not_found.
CREATE FUNCTION gp_task_get(p_actor bigint, p_task bigint) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    t tasks;
    a assignments;
    v_missing text[];
BEGIN
    t := gp_task_require(p_actor, p_task, 'read');
    IF gp_has_role(p_actor, gp_reader_roles(), t.unit_id) THEN
        RETURN gp_task_json(t, true);
    END IF;
    SELECT * INTO a FROM assignments
     WHERE task_id = t.id AND worker_id = p_actor ORDER BY id DESC LIMIT 1;
    v_missing := ARRAY(SELECT x FROM unnest(t.required_tags) x
                        WHERE NOT x = ANY ((SELECT tags FROM persons WHERE id = p_actor)::text[])
                        ORDER BY x);
    RETURN gp_task_json(t, false) || jsonb_build_object(
        'missing_tags', to_jsonb(v_missing),
        'can_claim', t.status = 'open' AND now() >= t.starts_at AND now() < t.ends_at
                     AND gp_task_free_slots(t) > 0 AND cardinality(v_missing) = 0
                     AND t.publisher_id <> p_actor AND gp_task_in_area(p_actor, t.unit_id)
                     AND NOT EXISTS (SELECT 1 FROM assignments x
                                      WHERE x.task_id = t.id AND x.worker_id = p_actor
                                        AND x.state IN ('claimed', 'submitted', 'approved',
                                                        'rejected')),
        'my_assignment', CASE WHEN a.id IS NOT NULL THEN gp_assignment_json(a) END);
END
$$;

-- p_args: {view?: "worker"|"staff" (default: staff when the actor holds a staff or auditor
-- role, else worker), status?, category?, unit_id? (staff: a subtree of their scope),
-- mine?: bool (worker: tasks they hold an assignment on, any status), lat?, lng?, radius_m?
-- (all three or none: tasks with a place within radius_m, ordered by distance), cursor?,
-- limit? (1..500, default 50)}.
-- Worker view: tasks on their home unit or an ancestor whose required tags they all hold;
-- status defaults to "open" (any status with mine). Order: id descending, or (distance, id)
-- with near. Returns {items: [task + distance_m? + my_state?], next_cursor}.
CREATE FUNCTION gp_task_list(p_actor bigint, p_args jsonb) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_args jsonb;
    v_view text;
    v_staff boolean;
    v_status text;
    v_category text;
    v_unit org_units;
    v_mine boolean;
    v_lat double precision;
    v_lng double precision;
    v_radius double precision;
    v_near boolean;
    v_limit int;
    v_cur text[];
    v_cur_id bigint;
    v_cur_d double precision;
    v_person persons;
    v_area bigint[];
    v_items jsonb;
BEGIN
    v_args := gp_targ_object(p_args, ARRAY['view', 'status', 'category', 'unit_id', 'mine',
                                           'lat', 'lng', 'radius_m', 'cursor', 'limit']);
    v_view := gp_targ_text(v_args, 'view', 1, 16);
    v_staff := EXISTS (SELECT 1 FROM role_grants g JOIN persons p ON p.id = g.person_id
                        WHERE g.person_id = p_actor AND p.status = 'active'
                          AND g.role = ANY (gp_reader_roles()));
    IF v_view IS NULL THEN
        v_view := CASE WHEN v_staff THEN 'staff' ELSE 'worker' END;
    ELSIF v_view NOT IN ('worker', 'staff') THEN
        PERFORM gp_raise('400', 'invalid_value', 'view must be worker or staff', 'view');
    END IF;
    v_status := gp_targ_text(v_args, 'status', 1, 16);
    IF v_status IS NOT NULL AND v_status NOT IN ('open', 'closed', 'cancelled') THEN
        PERFORM gp_raise('400', 'invalid_value', 'status must be open, closed or cancelled',
                         'status');
    END IF;
    v_category := gp_targ_text(v_args, 'category', 1, 32);
    v_mine := coalesce(gp_targ_bool(v_args, 'mine'), false);
    v_lat := gp_targ_num(v_args, 'lat', -90, 90);
    v_lng := gp_targ_num(v_args, 'lng', -180, 180);
    v_radius := gp_targ_num(v_args, 'radius_m', 1, 100000);
    v_near := v_lat IS NOT NULL OR v_lng IS NOT NULL OR v_radius IS NOT NULL;
    IF v_near AND (v_lat IS NULL OR v_lng IS NULL OR v_radius IS NULL) THEN
        PERFORM gp_raise('400', 'invalid_near', 'lat, lng and radius_m go together',
                         CASE WHEN v_lat IS NULL THEN 'lat' WHEN v_lng IS NULL THEN 'lng'
                              ELSE 'radius_m' END);
    END IF;
    -- Near a place the cursor is (distance, id), otherwise the id.
    SELECT lim, cursor INTO v_limit, v_cur
      FROM gp_page_args(v_args, CASE WHEN v_near THEN 'd' ELSE 'i' END,
                        CASE WHEN v_near THEN 2 ELSE 1 END);
    IF v_near THEN
        v_cur_d := gp_tcursor_float(v_cur[1]);
        v_cur_id := gp_tcursor_bigint(v_cur[2]);
    ELSE
        v_cur_id := gp_tcursor_bigint(v_cur[1]);
    END IF;

    IF v_view = 'staff' THEN
        IF NOT v_staff THEN
            PERFORM gp_raise('403', 'not_staff', 'only staff and auditors see tasks this way',
                             'view');
        END IF;
        IF v_mine THEN
            PERFORM gp_raise('400', 'invalid_value', 'mine is for the worker view', 'mine');
        END IF;
        IF v_args ? 'unit_id' THEN
            v_unit := gp_require_unit(p_actor, gp_targ_int(v_args, 'unit_id', 1,
                                      9223372036854775807, true), gp_reader_roles());
        END IF;
        SELECT coalesce(jsonb_agg(x.j ORDER BY x.ord), '[]') INTO v_items FROM (
            SELECT row_number() OVER (ORDER BY CASE WHEN v_near THEN d.d END,
                                               CASE WHEN v_near THEN t.id END,
                                               t.id DESC) AS ord,
                   gp_task_json(t, true)
                   || CASE WHEN v_near THEN jsonb_build_object('distance_m', round(d.d::numeric, 1))
                           ELSE '{}' END
                   || jsonb_build_object('_cursor', CASE WHEN v_near
                          THEN gp_tcursor_encode(ARRAY['d', d.d::text, t.id::text])
                          ELSE gp_tcursor_encode(ARRAY['i', t.id::text]) END) AS j
              FROM tasks t
              JOIN org_units tu ON tu.id = t.unit_id
              CROSS JOIN LATERAL (SELECT CASE WHEN v_near
                                   THEN gp_distance_m(v_lat, v_lng, t.lat, t.lng) END AS d) d
             WHERE v_staff
               AND gp_role_covers(p_actor, gp_reader_roles(), tu.path)
               AND (v_unit.id IS NULL OR tu.path <@ v_unit.path)
               AND (v_status IS NULL OR t.status = v_status)
               AND (v_category IS NULL OR t.category = v_category)
               AND (NOT v_near OR (t.lat IS NOT NULL AND d.d <= v_radius))
               AND (v_cur IS NULL OR (v_near AND (d.d, t.id) > (v_cur_d, v_cur_id))
                    OR (NOT v_near AND t.id < v_cur_id))
             ORDER BY CASE WHEN v_near THEN d.d END, CASE WHEN v_near THEN t.id END, t.id DESC
             LIMIT v_limit + 1) x;
        RETURN gp_page(v_items, v_limit);
    END IF;

    -- Worker view.
    IF v_args ? 'unit_id' THEN
        PERFORM gp_raise('400', 'invalid_value', 'unit_id is for the staff view', 'unit_id');
    END IF;
    IF NOT gp_task_is_worker(p_actor) THEN
        PERFORM gp_raise('403', 'not_a_worker', 'only workers and volunteers see tasks this way',
                         'view');
    END IF;
    SELECT p.* INTO v_person FROM persons p WHERE p.id = p_actor;
    SELECT string_to_array(ltree2text(u.path), '.')::bigint[] INTO v_area
      FROM org_units u WHERE u.id = v_person.unit_id;
    SELECT coalesce(jsonb_agg(x.j ORDER BY x.ord), '[]') INTO v_items FROM (
        SELECT row_number() OVER (ORDER BY CASE WHEN v_near THEN d.d END, 
                                           CASE WHEN v_near THEN t.id END,
                                           t.id DESC) AS ord,
               gp_task_json(t, false)
               || CASE WHEN v_near THEN jsonb_build_object('distance_m', round(d.d::numeric, 1))
                       ELSE '{}' END
               || jsonb_build_object('my_state',
                      (SELECT a.state FROM assignments a
                        WHERE a.task_id = t.id AND a.worker_id = p_actor
                        ORDER BY a.id DESC LIMIT 1))
               || jsonb_build_object('_cursor', CASE WHEN v_near
                      THEN gp_tcursor_encode(ARRAY['d', d.d::text, t.id::text])
                      ELSE gp_tcursor_encode(ARRAY['i', t.id::text]) END) AS j
          FROM tasks t
          CROSS JOIN LATERAL (SELECT CASE WHEN v_near
                               THEN gp_distance_m(v_lat, v_lng, t.lat, t.lng) END AS d) d
         WHERE (CASE WHEN v_mine
                     THEN EXISTS (SELECT 1 FROM assignments a
                                   WHERE a.task_id = t.id AND a.worker_id = p_actor)
                     ELSE t.unit_id = ANY (v_area) AND t.required_tags <@ v_person.tags END)
           AND (CASE WHEN v_status IS NOT NULL THEN t.status = v_status
                     ELSE v_mine OR t.status = 'open' END)
           AND (v_category IS NULL OR t.category = v_category)
           AND (NOT v_near OR (t.lat IS NOT NULL AND d.d <= v_radius))
           AND (v_cur IS NULL OR (v_near AND (d.d, t.id) > (v_cur_d, v_cur_id))
                OR (NOT v_near AND t.id < v_cur_id))
         ORDER BY CASE WHEN v_near THEN d.d END, CASE WHEN v_near THEN t.id END, t.id DESC
         LIMIT v_limit + 1) x;
    RETURN gp_page(v_items, v_limit);
END
$$;

-- The claim gate's truth, for rebuilding the server's Redis counter:
-- {"task_id", "free_slots", "slots_version"}; 404 task_not_found.
CREATE FUNCTION gp_task_slots(p_task bigint) RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
DECLARE
    t tasks;
BEGIN
    SELECT * INTO t FROM tasks WHERE id = p_task;
    IF NOT FOUND THEN
        PERFORM gp_raise('404', 'task_not_found', 'task not found', 'task_id');
    END IF;
    RETURN gp_task_slots_json(t);
END
$$;

------------------------------------------------------------------------------------------
-- Claiming and releasing
------------------------------------------------------------------------------------------
-- Claims one slot for the actor (a worker or volunteer the task reaches). Errors: 404
-- task_not_found (unknown or not in the worker's area), 403 not_a_worker, 403 missing_tags,
-- 403 own_task (the publisher), 409 task_not_open (not open, or outside starts_at..ends_at),
-- 409 already_claimed (a claimed/submitted/approved/rejected assignment on this task already),
-- 409 task_full. The winner among concurrent claims is decided by the conditional UPDATE of
-- the task row (READ COMMITTED re-checks the condition on the newest row version after
-- waiting), and one-per-worker by the unique index. Idempotent on (p_idem_principal, key).
-- Returns the assignment + {"gate": {...}}.
CREATE FUNCTION gp_task_claim(p_actor bigint, p_task bigint, p_idem_principal text DEFAULT NULL,
                              p_idem_key text DEFAULT NULL, p_request_hash text DEFAULT NULL)
RETURNS gp_reply LANGUAGE plpgsql AS $$
DECLARE
    v_principal text := gp_idem_principal(p_idem_principal, p_actor);
    v_replay jsonb;
    t tasks;
    a assignments;
    v_missing text[];
    v_resp jsonb;
    v_in_area boolean;
    v_gate jsonb;
BEGIN
    v_replay := gp_idem_begin(v_principal, p_idem_key, p_request_hash);
    IF v_replay IS NOT NULL THEN
        -- The first claim's gate: task_gate_won writes it only to a gate without a unit.
        RETURN gp_out(v_replay, jsonb_build_object('gate_won',
                          v_replay -> 'gate' || jsonb_build_object('worker_id', p_actor)));
    END IF;
    SELECT * INTO t FROM tasks WHERE id = p_task;
    v_in_area := FOUND AND gp_task_in_area(p_actor, t.unit_id);
    IF NOT v_in_area AND (t.id IS NULL OR NOT gp_has_role(p_actor, gp_reader_roles(), t.unit_id))
    THEN
        PERFORM gp_raise('404', 'task_not_found', 'task not found', 'task_id');
    END IF;
    IF NOT v_in_area THEN
        PERFORM gp_raise('403', 'not_a_worker',
            'only workers and volunteers of this area can claim this task', 'task_id');
    END IF;
    v_missing := ARRAY(SELECT x FROM unnest(t.required_tags) x
                        WHERE NOT x = ANY ((SELECT tags FROM persons WHERE id = p_actor)::text[])
                        ORDER BY x);
    IF cardinality(v_missing) > 0 THEN
        PERFORM gp_raise('403', 'missing_tags',
            format('this task requires the tags: %s', array_to_string(v_missing, ', ')), 'task_id');
    END IF;
    IF t.publisher_id = p_actor THEN
        PERFORM gp_raise('403', 'own_task', 'you cannot claim a task you published', 'task_id');
    END IF;
    IF t.status <> 'open' OR now() < t.starts_at OR now() >= t.ends_at THEN
        PERFORM gp_raise('409', 'task_not_open',
            CASE WHEN t.status <> 'open' THEN format('the task is %s', t.status)
                 WHEN now() < t.starts_at THEN 'the task has not started yet'
                 ELSE 'the task has ended' END, 'task_id');
    END IF;
    IF EXISTS (SELECT 1 FROM assignments x
                WHERE x.task_id = p_task AND x.worker_id = p_actor
                  AND x.state IN ('claimed', 'submitted', 'approved', 'rejected')) THEN
        PERFORM gp_raise('409', 'already_claimed', 'you already hold an assignment on this task',
                         'task_id');
    END IF;
    -- Full as of the last commit: answer at once instead of queueing on the row lock. (Only a
    -- shortcut: the UPDATE below decides.)
    IF t.occupied >= t.slots THEN
        PERFORM gp_raise('409', 'task_full', 'every slot of this task is taken', 'task_id');
    END IF;
    -- The race is decided here.
    UPDATE tasks SET occupied = occupied + 1, version = version + 1, updated_at = now()
     WHERE id = p_task AND status = 'open' AND starts_at <= now() AND ends_at > now()
       AND occupied < slots
    RETURNING * INTO t;
    IF NOT FOUND THEN
        SELECT * INTO t FROM tasks WHERE id = p_task;
        IF t.status <> 'open' THEN
            PERFORM gp_raise('409', 'task_not_open', format('the task is %s', t.status), 'task_id');
        END IF;
        PERFORM gp_raise('409', 'task_full', 'every slot of this task is taken', 'task_id');
    END IF;
    BEGIN
        INSERT INTO assignments (task_id, worker_id, claimed_at, due_at, street_id)
        VALUES (p_task, p_actor, now(), least(now() + t.claim_ttl, t.ends_at), t.street_id)
        RETURNING * INTO a;
    EXCEPTION WHEN unique_violation THEN
        PERFORM gp_raise('409', 'already_claimed', 'you already hold an assignment on this task',
                         'task_id');
    END;
    -- The history row is the record of the claim (the claimant gets the answer: no outbox
    -- notice).
    INSERT INTO assignment_events (assignment_id, task_id, worker_id, actor_id, from_state,
                                   to_state, street_id)
    VALUES (a.id, a.task_id, a.worker_id, p_actor, NULL, 'claimed', a.street_id);
    v_gate := gp_task_slots_json(t);
    v_resp := gp_assignment_json(a) || jsonb_build_object('gate', v_gate);
    RETURN gp_out(gp_idem_finish(v_principal, p_idem_key, p_request_hash, v_resp),
        jsonb_build_object('gate_won', v_gate || jsonb_build_object('worker_id', p_actor)));
END
$$;

-- The actor's own assignment, for changes: locks the task row, then the assignment, and
-- returns the assignment (404 assignment_not_found when it is not theirs). The caller reads
-- the task row afterwards (it holds its lock).
CREATE FUNCTION gp_assignment_lock_own(p_actor bigint, p_assignment bigint) RETURNS assignments
LANGUAGE plpgsql AS $$
DECLARE
    a assignments;
BEGIN
    SELECT * INTO a FROM assignments WHERE id = p_assignment AND worker_id = p_actor;
    IF NOT FOUND THEN
        PERFORM gp_raise('404', 'assignment_not_found', 'assignment not found', 'assignment_id');
    END IF;
    PERFORM 1 FROM tasks WHERE id = a.task_id FOR UPDATE;
    SELECT * INTO a FROM assignments WHERE id = p_assignment FOR UPDATE;
    RETURN a;
END
$$;

-- The worker gives up a live claim; the slot is free again. Releasing an assignment the
-- worker already released returns it again with "idempotent_replay": true. Errors: 404
-- assignment_not_found, 409 assignment_not_live. Returns the assignment + {"gate": {...}}.
CREATE FUNCTION gp_assignment_release(p_actor bigint, p_assignment bigint) RETURNS gp_reply
LANGUAGE plpgsql AS $$
DECLARE
    a assignments;
    t tasks;
BEGIN
    a := gp_assignment_lock_own(p_actor, p_assignment);
    SELECT * INTO t FROM tasks WHERE id = a.task_id;
    IF a.state = 'released' THEN
        RETURN gp_out(gp_assignment_json(a) || jsonb_build_object('gate', gp_task_slots_json(t),
                                                                  'idempotent_replay', true),
                      jsonb_build_object('gates', jsonb_build_array(gp_task_slots_json(t))));
    END IF;
    IF a.state <> 'claimed' THEN
        PERFORM gp_raise('409', 'assignment_not_live', format('the assignment is %s', a.state),
                         'assignment_id');
    END IF;
    a := gp_assignment_set_state(a.id, 'released', p_actor, NULL, 'released_by_worker');
    SELECT * INTO t FROM tasks WHERE id = a.task_id;
    RETURN gp_out(gp_assignment_json(a) || jsonb_build_object('gate', gp_task_slots_json(t)),
                  jsonb_build_object('gates', jsonb_build_array(gp_task_slots_json(t))));
END
$$;

------------------------------------------------------------------------------------------
-- Offline work: check-ins and completion reports
------------------------------------------------------------------------------------------
-- Where the claim's "made while live" window ends: the due time, or earlier when it was
-- ended early (cancellation). Reports and check-ins must be made in
-- [claimed_at - skew, live_end + skew] and received by live_end + task.sync_grace.
CREATE FUNCTION gp_assignment_live_end(a assignments) RETURNS timestamptz
LANGUAGE sql IMMUTABLE AS $$
    SELECT least(a.due_at, coalesce(a.ended_at, a.due_at))
$$;

-- Checks that a client time p_at (made_at of a report, at of a check-in) may be applied to
-- assignment a of task t now; raises the documented errors otherwise.
CREATE FUNCTION gp_assignment_check_time(a assignments, t tasks, p_at timestamptz,
                                         p_skew interval, p_field text)
RETURNS void LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF p_at > now() + p_skew THEN
        PERFORM gp_raise('400', CASE WHEN p_field = 'made_at' THEN 'report_in_future'
                                     ELSE 'checkin_in_future' END,
            format('%s is in the future', p_field), p_field);
    END IF;
    IF p_at < a.claimed_at - p_skew THEN
        PERFORM gp_raise('409', CASE WHEN p_field = 'made_at' THEN 'report_before_claim'
                                     ELSE 'checkin_before_claim' END,
            format('%s is before the task was claimed', p_field), p_field);
    END IF;
    IF p_at > gp_assignment_live_end(a) + p_skew THEN
        PERFORM gp_raise('409', 'claim_expired',
            format('%s is after the claim had ended', p_field), p_field);
    END IF;
    IF now() > gp_assignment_live_end(a) + t.sync_grace OR t.released_at IS NOT NULL THEN
        PERFORM gp_raise('409', 'sync_window_closed',
            'this claim ended too long ago for its work to be synced', p_field);
    END IF;
END
$$;

-- p_args: {lat, lng, at}. A place/time check-in on the actor's claimed (or expired: late sync)
-- assignment. Idempotent on (assignment, at): the same check-in again returns the stored one
-- with "idempotent_replay": true. Outside the geofence: flagged, or 409 outside_geofence when
-- the task enforces it. Errors: 400 (fields), 400 checkin_in_future, 404
-- assignment_not_found, 409 assignment_not_live, checkin_before_claim, claim_expired,
-- sync_window_closed, outside_geofence. p_skew: the tolerated client clock skew.
CREATE FUNCTION gp_checkin(p_actor bigint, p_assignment bigint, p_args jsonb,
                           p_skew interval DEFAULT interval '2 minutes')
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_args jsonb;
    a assignments;
    t tasks;
    c checkins;
    v_at timestamptz;
    v_lat double precision;
    v_lng double precision;
    v_dist double precision;
    v_flags text[] := '{}';
BEGIN
    v_args := gp_targ_object(p_args, ARRAY['lat', 'lng', 'at']);
    v_lat := gp_targ_num(v_args, 'lat', -90, 90, true);
    v_lng := gp_targ_num(v_args, 'lng', -180, 180, true);
    v_at := gp_targ_ts(v_args, 'at', true);
    a := gp_assignment_lock_own(p_actor, p_assignment);
    SELECT * INTO t FROM tasks WHERE id = a.task_id;
    SELECT * INTO c FROM checkins WHERE assignment_id = a.id AND at = v_at;
    IF FOUND THEN
        RETURN gp_checkin_json(c) || jsonb_build_object('idempotent_replay', true);
    END IF;
    IF a.state NOT IN ('claimed', 'expired') THEN
        PERFORM gp_raise('409', 'assignment_not_live', format('the assignment is %s', a.state),
                         'assignment_id');
    END IF;
    PERFORM gp_assignment_check_time(a, t, v_at, p_skew, 'at');
    IF t.lat IS NOT NULL THEN
        v_dist := gp_distance_m(t.lat, t.lng, v_lat, v_lng);
        IF t.geofence_m IS NOT NULL AND v_dist > t.geofence_m THEN
            IF t.geofence_enforced THEN
                PERFORM gp_raise('409', 'outside_geofence',
                    format('the check-in is %s m from the task, more than %s m',
                           round(v_dist::numeric), t.geofence_m), 'lat');
            END IF;
            v_flags := v_flags || 'outside_geofence'::text;
        END IF;
    END IF;
    IF now() > gp_assignment_live_end(a) THEN
        v_flags := v_flags || 'late_sync'::text;
    END IF;
    INSERT INTO checkins (assignment_id, worker_id, at, lat, lng, distance_m, flags, street_id)
    VALUES (a.id, p_actor, v_at, v_lat, v_lng, v_dist, v_flags, a.street_id)
    RETURNING * INTO c;
    RETURN gp_checkin_json(c);
END
$$;

-- Validates p_args.evidence: up to 20 objects {url: http(s) URL of at most 2048 characters,
-- sha256: 64 hex digits}; returns them with only those keys and the digest in lower case.
CREATE FUNCTION gp_report_evidence(p_args jsonb) RETURNS jsonb LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    v jsonb := gp_targ_value(p_args, 'evidence', false);
    e jsonb;
    v_out jsonb := '[]';
BEGIN
    IF v IS NULL THEN
        RETURN v_out;
    END IF;
    IF jsonb_typeof(v) <> 'array' OR jsonb_array_length(v) > 20 THEN
        PERFORM gp_raise('400', 'invalid_evidence', 'evidence must be a list of at most 20 items',
                         'evidence');
    END IF;
    FOR e IN SELECT * FROM jsonb_array_elements(v) LOOP
        IF jsonb_typeof(e) <> 'object' OR EXISTS (SELECT 1 FROM jsonb_object_keys(e) k
                                                   WHERE k NOT IN ('url', 'sha256'))
           OR jsonb_typeof(e -> 'url') IS DISTINCT FROM 'string'
           OR jsonb_typeof(e -> 'sha256') IS DISTINCT FROM 'string' THEN
            PERFORM gp_raise('400', 'invalid_evidence',
                'each evidence item must be an object {url, sha256}', 'evidence');
        END IF;
        IF length(e ->> 'url') > 2048 OR (e ->> 'url') !~ '^https?://[^[:space:][:cntrl:]]+$' THEN
            PERFORM gp_raise('400', 'invalid_evidence', 'evidence url must be an http(s) URL',
                             'evidence');
        END IF;
        IF (e ->> 'sha256') !~ '^[0-9A-Fa-f]{64}$' THEN
            PERFORM gp_raise('400', 'invalid_evidence', 'evidence sha256 must be 64 hex digits',
                             'evidence');
        END IF;
        v_out := v_out || jsonb_build_array(jsonb_build_object('url', e ->> 'url',
                                                               'sha256', lower(e ->> 'sha256')));
    END LOOP;
    RETURN v_out;
END
$$;

-- Submits a completion report made (possibly offline, possibly long ago) by the actor.
-- p_args: {assignment_id | task_id (exactly one), client_report_id (1..64 of [A-Za-z0-9_.:-]),
--          made_at (RFC 3339, client clock), lat?, lng?, notes? (<= 2000), evidence?:
--          [{url, sha256}] (<= 20), device_id? (<= 128)}; p_skew: the tolerated clock skew.
-- Exactly once: the same (worker, client_report_id) again returns the stored first response
-- with "idempotent_replay": true and changes nothing (a concurrent duplicate waits for the
-- first and then replays it); the same id with a different body (device_id aside) is 422
-- client_report_id_reused. Accepted when made_at lies in the claim's live window (with
-- p_skew), even if the claim expired or the task closed since (late sync, until live end +
-- sync_grace); a report on an expired claim needs a free slot (409 slot_reassigned).
-- Returns {"report", "assignment", "gate"}; the assignment becomes 'submitted' and is
-- auto-approved at review_due_at unless staff decide first.
CREATE FUNCTION gp_report_submit(p_actor bigint, p_args jsonb,
                                 p_skew interval DEFAULT interval '2 minutes')
RETURNS gp_reply LANGUAGE plpgsql AS $$
DECLARE
    v_args jsonb;
    v_crid text;
    v_hash text;
    r reports;
    a assignments;
    t tasks;
    v_aid bigint;
    v_tid bigint;
    v_made timestamptz;
    v_lat double precision;
    v_lng double precision;
    v_dist double precision;
    v_notes text;
    v_evidence jsonb;
    v_device text;
    v_flags text[] := '{}';
    v_resp jsonb;
    v_from text;
    v_gate jsonb;
    v_try int;
    v_locked boolean;
    v_done boolean;
BEGIN
    v_args := gp_targ_object(p_args, ARRAY['assignment_id', 'task_id', 'client_report_id',
                                           'made_at', 'lat', 'lng', 'notes', 'evidence',
                                           'device_id']);
    v_crid := gp_targ_text(v_args, 'client_report_id', 1, 64, true);
    IF v_crid !~ '^[A-Za-z0-9_.:-]{1,64}$' THEN
        PERFORM gp_raise('400', 'invalid_client_report_id',
            'client_report_id must be 1 to 64 letters, digits or _.:-', 'client_report_id');
    END IF;
    -- A concurrent duplicate waits here for the first to commit, then replays it.
    PERFORM pg_advisory_xact_lock(hashtextextended('gp_report/' || p_actor || '/' || v_crid, 0));
    v_hash := md5((v_args - 'device_id')::text);
    SELECT * INTO r FROM reports WHERE worker_id = p_actor AND client_report_id = v_crid;
    IF FOUND THEN
        IF r.request_hash <> v_hash THEN
            PERFORM gp_raise('422', 'client_report_id_reused',
                'this client_report_id was already used for a different report',
                'client_report_id');
        END IF;
        RETURN gp_out(r.response || jsonb_build_object('idempotent_replay', true));
    END IF;

    v_made := gp_targ_ts(v_args, 'made_at', true);
    IF v_made > now() + p_skew THEN
        PERFORM gp_raise('400', 'report_in_future', 'made_at is in the future', 'made_at');
    END IF;
    v_lat := gp_targ_num(v_args, 'lat', -90, 90);
    v_lng := gp_targ_num(v_args, 'lng', -180, 180);
    IF (v_lat IS NULL) <> (v_lng IS NULL) THEN
        PERFORM gp_raise('400', 'invalid_place', 'lat and lng must be given together',
                         CASE WHEN v_lat IS NULL THEN 'lat' ELSE 'lng' END);
    END IF;
    v_notes := coalesce(gp_targ_text(v_args, 'notes', 0, 2000), '');
    v_evidence := gp_report_evidence(v_args);
    v_device := gp_targ_text(v_args, 'device_id', 1, 128);
    v_aid := gp_targ_int(v_args, 'assignment_id', 1, 9223372036854775807);
    v_tid := gp_targ_int(v_args, 'task_id', 1, 9223372036854775807);
    IF (v_aid IS NULL) = (v_tid IS NULL) THEN
        PERFORM gp_raise('400', 'invalid_target', 'give exactly one of assignment_id and task_id',
                         'assignment_id');
    END IF;
    IF v_aid IS NULL THEN
        -- The worker's claim on that task whose live window holds made_at, else the latest.
        SELECT x.id INTO v_aid FROM assignments x
         WHERE x.task_id = v_tid AND x.worker_id = p_actor
         ORDER BY (v_made BETWEEN x.claimed_at - p_skew AND gp_assignment_live_end(x) + p_skew)
                  DESC, x.id DESC
         LIMIT 1;
        IF NOT FOUND THEN
            PERFORM gp_raise('404', 'assignment_not_found', 'you hold no claim on this task',
                             'task_id');
        END IF;
    END IF;
    -- claimed -> submitted keeps the slot occupied, so it writes no counter of the task row
    -- and takes no lock on it: the checks run on the rows as last committed and one guarded
    -- UPDATE of the assignment (state = 'claimed') decides; when the assignment moved meanwhile
    -- (expired by the timer, released, reported from another phone) it is read again and
    -- checked again. expired -> submitted (a late sync) needs a free slot: that rare path
    -- locks the task row (the global order: task, then assignment), which every move into or
    -- out of 'expired' holds, reads both rows again under it and checks again.
    SELECT * INTO a FROM assignments WHERE id = v_aid AND worker_id = p_actor;
    IF NOT FOUND THEN
        PERFORM gp_raise('404', 'assignment_not_found', 'assignment not found', 'assignment_id');
    END IF;
    v_tid := a.task_id;
    SELECT * INTO t FROM tasks WHERE id = v_tid;
    v_locked := false;
    v_done := false;
    FOR v_try IN 1 .. 3 LOOP
        PERFORM gp_report_submit_check(a, t, p_actor, v_made, p_skew, v_evidence, v_lat);
        v_dist := NULL;
        v_flags := '{}';
        IF t.lat IS NOT NULL AND v_lat IS NOT NULL THEN
            v_dist := gp_distance_m(t.lat, t.lng, v_lat, v_lng);
        END IF;
        IF t.geofence_m IS NOT NULL THEN
            IF v_lat IS NULL THEN
                v_flags := v_flags || 'no_location'::text;
            ELSIF v_dist > t.geofence_m THEN
                IF t.geofence_enforced THEN
                    PERFORM gp_raise('409', 'outside_geofence',
                        format('the report is %s m from the task, more than %s m',
                               round(v_dist::numeric), t.geofence_m), 'lat');
                END IF;
                v_flags := v_flags || 'outside_geofence'::text;
            END IF;
        END IF;
        IF v_made < t.starts_at OR v_made > t.ends_at THEN
            v_flags := v_flags || 'outside_window'::text;
        END IF;
        IF v_made < a.claimed_at OR v_made > gp_assignment_live_end(a) THEN
            v_flags := v_flags || 'clock_skew'::text;
        END IF;
        IF now() > gp_assignment_live_end(a) THEN
            v_flags := v_flags || 'late_sync'::text;
        END IF;
        IF a.state = 'expired' AND EXISTS (
               SELECT 1 FROM assignments x
                WHERE x.task_id = a.task_id AND x.worker_id = p_actor AND x.id <> a.id
                  AND x.state IN ('claimed', 'submitted', 'approved', 'rejected')) THEN
            PERFORM gp_raise('409', 'claim_superseded',
                'you hold a newer claim on this task; report on that one', 'assignment_id');
        END IF;
        v_from := a.state;
        IF v_from = 'expired' AND NOT v_locked THEN
            SELECT * INTO t FROM tasks WHERE id = v_tid FOR NO KEY UPDATE;
            v_locked := true;
            SELECT * INTO a FROM assignments WHERE id = v_aid;
            CONTINUE;
        END IF;
        IF v_from = 'expired' THEN
            IF t.occupied >= t.slots THEN
                PERFORM gp_raise('409', 'slot_reassigned',
                    'the slot of this claim was given to someone else after it expired',
                    'assignment_id');
            END IF;
            UPDATE tasks SET occupied = occupied + 1, expired = expired - 1,
                             version = version + 1, updated_at = now()
             WHERE id = v_tid
            RETURNING * INTO t;
        END IF;
        UPDATE assignments SET
            state = 'submitted', submitted_at = now(),
            review_due_at = now() + t.review_window, reason = NULL,
            report_id = nextval('reports_id_seq'),
            version = version + 1
         WHERE id = a.id AND state = v_from
        RETURNING * INTO a;
        v_done := FOUND;
        -- (an expired assignment cannot move under the task row's lock: this ends the loop)
        EXIT WHEN v_done OR v_from = 'expired';
        SELECT * INTO a FROM assignments WHERE id = v_aid;
    END LOOP;
    IF NOT v_done THEN
        PERFORM gp_raise('409', 'already_submitted',
            'a report for this assignment was already accepted', 'assignment_id');
    END IF;
    r.id := a.report_id;
    INSERT INTO assignment_events (assignment_id, task_id, worker_id, actor_id, from_state,
                                   to_state, street_id)
    VALUES (a.id, a.task_id, a.worker_id, p_actor, v_from, 'submitted', a.street_id);
    r.worker_id := p_actor;
    r.client_report_id := v_crid;
    r.assignment_id := a.id;
    r.task_id := a.task_id;
    r.made_at := v_made;
    r.received_at := now();
    r.lat := v_lat;
    r.lng := v_lng;
    r.distance_m := v_dist;
    r.notes := v_notes;
    r.evidence := v_evidence;
    r.flags := v_flags;
    r.device_id := v_device;
    v_gate := gp_task_slots_json(t);
    v_resp := jsonb_build_object('report', gp_report_json(r), 'assignment', gp_assignment_json(a),
                                 'gate', v_gate);
    INSERT INTO reports (id, worker_id, client_report_id, assignment_id, task_id, made_at,
                         received_at, lat, lng, distance_m, notes, evidence, flags, device_id,
                         request_hash, response, street_id)
    VALUES (r.id, r.worker_id, r.client_report_id, r.assignment_id, r.task_id, r.made_at,
            r.received_at, r.lat, r.lng, r.distance_m, r.notes, r.evidence, r.flags,
            r.device_id, v_hash, v_resp, a.street_id);
    RETURN gp_out(v_resp, jsonb_build_object('gates', jsonb_build_array(v_gate)));
END
$$;

-- The checks of gp_report_submit on assignment a (the actor's) of task t that do not depend on
-- the report's place, in the order of their errors: 409 assignment_released, already_submitted,
-- the time checks (gp_assignment_check_time), 400 evidence_required, 409 checkin_required,
-- 400 location_required.
CREATE FUNCTION gp_report_submit_check(a assignments, t tasks, p_actor bigint,
                                       p_made timestamptz, p_skew interval, p_evidence jsonb,
                                       p_lat double precision)
RETURNS void LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF a.state = 'released' THEN
        PERFORM gp_raise('409', 'assignment_released', 'you released this claim', 'assignment_id');
    END IF;
    IF a.state IN ('submitted', 'approved', 'rejected') THEN
        PERFORM gp_raise('409', 'already_submitted',
            'a report for this assignment was already accepted', 'assignment_id');
    END IF;
    PERFORM gp_assignment_check_time(a, t, p_made, p_skew, 'made_at');
    IF jsonb_array_length(p_evidence) < t.evidence_photos THEN
        PERFORM gp_raise('400', 'evidence_required',
            format('this task needs at least %s evidence items', t.evidence_photos), 'evidence');
    END IF;
    IF t.evidence_checkin AND NOT EXISTS (SELECT 1 FROM checkins c WHERE c.assignment_id = a.id)
    THEN
        PERFORM gp_raise('409', 'checkin_required', 'this task needs a check-in before the report',
                         'assignment_id');
    END IF;
    IF t.geofence_m IS NOT NULL AND p_lat IS NULL AND t.geofence_enforced THEN
        PERFORM gp_raise('400', 'location_required', 'this task needs the report''s place', 'lat');
    END IF;
END
$$;

------------------------------------------------------------------------------------------
-- Review
------------------------------------------------------------------------------------------
-- Submitted reports on tasks in the actor's staff scope, oldest first (403 not_staff for
-- someone without a staff role).
-- p_args: {unit_id?, task_id?, flagged?: bool (only reports with flags), cursor?, limit?}.
-- Returns {items: [assignment + {task, worker, report, can_decide}], next_cursor}.
CREATE FUNCTION gp_review_queue(p_actor bigint, p_args jsonb) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_args jsonb;
    v_unit org_units;
    v_task bigint;
    v_flagged boolean;
    v_limit int;
    v_cur text[];
    v_cur_ts timestamptz;
    v_cur_id bigint;
    v_items jsonb;
BEGIN
    v_args := gp_targ_object(p_args, ARRAY['unit_id', 'task_id', 'flagged', 'cursor', 'limit']);
    IF NOT EXISTS (SELECT 1 FROM role_grants g JOIN persons p ON p.id = g.person_id
                    WHERE g.person_id = p_actor AND p.status = 'active'
                      AND g.role = ANY (gp_staff_roles())) THEN
        PERFORM gp_raise('403', 'not_staff', 'only staff review reports');
    END IF;
    IF v_args ? 'unit_id' THEN
        v_unit := gp_require_unit(p_actor, gp_targ_int(v_args, 'unit_id', 1, 9223372036854775807,
                                                       true), gp_staff_roles());
    END IF;
    v_task := gp_targ_int(v_args, 'task_id', 1, 9223372036854775807);
    IF v_task IS NOT NULL THEN
        PERFORM gp_task_require(p_actor, v_task, 'staff');
    END IF;
    v_flagged := coalesce(gp_targ_bool(v_args, 'flagged'), false);
    SELECT lim, cursor INTO v_limit, v_cur FROM gp_page_args(v_args, 's', 2);
    IF v_cur IS NOT NULL THEN
        v_cur_id := gp_tcursor_bigint(v_cur[2]);
        v_cur_ts := timestamptz 'epoch'
                    + (gp_tcursor_bigint(v_cur[1]) / 1000000) * interval '1 second'
                    + (gp_tcursor_bigint(v_cur[1]) % 1000000) * interval '1 microsecond';
    END IF;
    SELECT coalesce(jsonb_agg(x.j ORDER BY x.submitted_at, x.id), '[]') INTO v_items FROM (
        SELECT a.submitted_at, a.id,
               gp_assignment_json(a) || jsonb_build_object(
                   'task', jsonb_build_object('id', t.id, 'title', t.title, 'unit_id', t.unit_id,
                                              'category', t.category, 'reward', t.reward,
                                              'status', t.status, 'lat', t.lat, 'lng', t.lng,
                                              'geofence_m', t.geofence_m),
                   'worker', jsonb_build_object('id', w.id, 'name', w.name, 'unit_id', w.unit_id),
                   'report', gp_report_json(r),
                   'can_decide', a.worker_id <> p_actor
                                  AND gp_has_role(p_actor, gp_staff_roles(), t.unit_id),
                   '_cursor', gp_tcursor_encode(ARRAY['s', gp_ts_micros(a.submitted_at),
                                                      a.id::text])) AS j
          FROM assignments a
          JOIN tasks t ON t.id = a.task_id
          JOIN org_units tu ON tu.id = t.unit_id
          JOIN persons w ON w.id = a.worker_id
          JOIN org_units wu ON wu.id = w.unit_id
          LEFT JOIN reports r ON r.id = a.report_id
         WHERE a.state = 'submitted'
           -- staff over the task's unit, or (a task of a unit above them, e.g. community-wide)
           -- staff over the worker's home unit: they see it, the task's staff decide
           AND EXISTS (SELECT 1 FROM role_grants g JOIN org_units gu ON gu.id = g.unit_id
                        JOIN persons me ON me.id = g.person_id AND me.status = 'active'
                        WHERE g.person_id = p_actor AND g.role = ANY (gp_staff_roles())
                          AND (tu.path <@ gu.path OR (gu.path <@ tu.path AND wu.path <@ gu.path)))
           AND (v_unit.id IS NULL OR tu.path <@ v_unit.path
                OR (v_unit.path <@ tu.path AND wu.path <@ v_unit.path))
           AND (v_task IS NULL OR a.task_id = v_task)
           AND (NOT v_flagged OR cardinality(r.flags) > 0)
           AND (v_cur IS NULL OR (a.submitted_at, a.id) > (v_cur_ts, v_cur_id))
         ORDER BY a.submitted_at, a.id
         LIMIT v_limit + 1) x;
    RETURN gp_page(v_items, v_limit);
END
$$;

-- Approves (pays the reward through gp_task_award) or rejects (p_reason required) a submitted
-- report, before the auto-approval timer does. Staff over the task's unit only; nobody decides
-- on their own assignment. Errors: 404 assignment_not_found, 403 self_approval, 400
-- reason_required / invalid_length, 409 already_approved, already_rejected, not_submitted.
-- Returns the assignment + {"gate", "award" (gp_task_award's jsonb or null), "receipt":
-- {"txn_id"} or null, "task": {id, status, released_at, release_txn}}.
CREATE FUNCTION gp_report_decide(p_actor bigint, p_assignment bigint, p_approve boolean,
                                 p_reason text)
RETURNS gp_reply LANGUAGE plpgsql AS $$
DECLARE
    a assignments;
    t tasks;
    v_reason text;
    v_award jsonb;
    v_to text;
    v_after jsonb;
    v_gate jsonb;
BEGIN
    SELECT * INTO a FROM assignments WHERE id = p_assignment;
    IF FOUND THEN
        SELECT * INTO t FROM tasks WHERE id = a.task_id;
    END IF;
    IF a.id IS NULL OR NOT gp_has_role(p_actor, gp_staff_roles(), t.unit_id) THEN
        PERFORM gp_raise('404', 'assignment_not_found', 'assignment not found', 'assignment_id');
    END IF;
    IF p_approve IS NULL THEN
        PERFORM gp_raise('400', 'missing_field', 'approve is required', 'approve');
    END IF;
    IF a.worker_id = p_actor THEN
        PERFORM gp_raise('403', 'self_approval', 'you cannot review your own report',
                         'assignment_id');
    END IF;
    v_reason := gp_targ_text(jsonb_build_object('reason', p_reason), 'reason', 1, 500, false);
    IF NOT p_approve AND v_reason IS NULL THEN
        PERFORM gp_raise('400', 'reason_required', 'a reason is required to reject a report',
                         'reason');
    END IF;
    IF a.state IN ('approved', 'rejected') THEN
        PERFORM gp_raise('409', 'already_' || a.state, format('the report was already %s', a.state),
                         'assignment_id');
    END IF;
    IF a.state <> 'submitted' THEN
        PERFORM gp_raise('409', 'not_submitted', format('the assignment is %s', a.state),
                         'assignment_id');
    END IF;
    v_to := CASE WHEN p_approve THEN 'approved' ELSE 'rejected' END;
    -- Locks in the global order: the task row (its counters, one UPDATE: a rejection frees the
    -- slot, an approval counts), the assignment, then the ledger's accounts (gp_task_award).
    -- (occupied > approved -- something claimed or submitted -- holds while this assignment is
    -- submitted; when it is not met, the assignment was decided meanwhile.) When the
    -- assignment is no longer submitted under these locks, the checks below raise and the
    -- counters' change rolls back with them.
    UPDATE tasks SET
        occupied = occupied - (NOT p_approve)::int,
        approved = approved + p_approve::int,
        rejected = rejected + (NOT p_approve)::int,
        version = version + 1, updated_at = now()
     WHERE id = a.task_id AND occupied > approved
    RETURNING * INTO t;
    IF NOT FOUND THEN
        PERFORM 1 FROM tasks WHERE id = a.task_id FOR NO KEY UPDATE;
    END IF;
    SELECT * INTO a FROM assignments WHERE id = p_assignment FOR UPDATE;
    IF a.state IN ('approved', 'rejected') THEN   -- decided meanwhile (the UPDATE rolls back)
        PERFORM gp_raise('409', 'already_' || a.state, format('the report was already %s', a.state),
                         'assignment_id');
    END IF;
    IF a.state <> 'submitted' OR t.id IS NULL THEN
        PERFORM gp_raise('409', 'not_submitted', format('the assignment is %s', a.state),
                         'assignment_id');
    END IF;
    IF p_approve THEN
        v_award := gp_task_award(t.id, a.id, a.worker_id, t.reward, p_actor);
    END IF;
    UPDATE assignments SET
        state = v_to, decided_at = now(), decided_by = p_actor, reason = v_reason,
        award_txn = (v_award ->> 'txn_id')::bigint, version = version + 1
     WHERE id = a.id
    RETURNING * INTO a;
    INSERT INTO assignment_events (assignment_id, task_id, worker_id, actor_id, from_state,
                                   to_state, reason, street_id)
    VALUES (a.id, a.task_id, a.worker_id, p_actor, 'submitted', v_to, v_reason, a.street_id);
    PERFORM gp_outbox('assignment.' || v_to, a.worker_id,
        jsonb_build_object('assignment_id', a.id, 'task_id', a.task_id, 'from', 'submitted',
                           'to', v_to, 'reason', v_reason, 'award_txn', a.award_txn,
                           'at', now()));
    -- Close the task when every slot is approved, then settle it if it is final (what
    -- gp_task_after_change does, without locking and reading the row again when nothing is due).
    IF t.status = 'open' AND t.approved >= t.slots THEN
        t := gp_task_set_state(t.id, 'closed', p_actor, NULL, 'all_slots_approved');
    END IF;
    IF t.status <> 'open' THEN
        t := gp_task_settle(t.id, p_actor, NULL);
    END IF;
    v_after := gp_assignment_json(a);
    v_gate := gp_task_slots_json(t);
    PERFORM gp_audit(p_actor, CASE WHEN p_approve THEN 'report.approve' ELSE 'report.reject' END,
                     'assignment', a.id::text, t.unit_id,
                     jsonb_build_object('state', 'submitted'), v_after, v_reason);
    RETURN gp_out(v_after || jsonb_build_object(
        'gate', v_gate, 'award', v_award,
        'receipt', CASE WHEN p_approve THEN jsonb_build_object('txn_id', a.award_txn) END,
        'task', jsonb_build_object('id', t.id, 'status', t.status, 'released_at', t.released_at,
                                   'release_txn', t.release_txn)),
        jsonb_build_object('gates', jsonb_build_array(v_gate),
                           'awards', CASE WHEN v_award IS NOT NULL
                                          THEN jsonb_build_array(v_award) END));
END
$$;

------------------------------------------------------------------------------------------
-- The worker's own view, one assignment, a task's history
------------------------------------------------------------------------------------------
-- p_args: {state?, task_id?, cursor?, limit?}; newest first.
-- Returns {items: [assignment + {task: {id, title, reward, status, ends_at}, report: {id,
-- client_report_id, made_at, flags} | null}], next_cursor}.
CREATE FUNCTION gp_assignments_mine(p_actor bigint, p_args jsonb) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_args jsonb;
    v_state text;
    v_task bigint;
    v_limit int;
    v_cur text[];
    v_cur_id bigint;
    v_items jsonb;
BEGIN
    v_args := gp_targ_object(p_args, ARRAY['state', 'task_id', 'cursor', 'limit']);
    v_state := gp_targ_text(v_args, 'state', 1, 16);
    IF v_state IS NOT NULL AND v_state NOT IN ('claimed', 'submitted', 'approved', 'rejected',
                                               'expired', 'released') THEN
        PERFORM gp_raise('400', 'invalid_value', 'unknown assignment state', 'state');
    END IF;
    v_task := gp_targ_int(v_args, 'task_id', 1, 9223372036854775807);
    SELECT lim, cursor INTO v_limit, v_cur FROM gp_page_args(v_args, 'i', 1);
    v_cur_id := gp_tcursor_bigint(v_cur[1]);
    SELECT coalesce(jsonb_agg(x.j ORDER BY x.id DESC), '[]') INTO v_items FROM (
        SELECT a.id, gp_assignment_json(a) || jsonb_build_object(
                   'task', jsonb_build_object('id', t.id, 'title', t.title, 'reward', t.reward,
                                              'status', t.status, 'ends_at', t.ends_at),
                   'report', CASE WHEN r.id IS NOT NULL THEN jsonb_build_object(
                                 'id', r.id, 'client_report_id', r.client_report_id,
                                 'made_at', r.made_at, 'flags', to_jsonb(r.flags)) END,
                   '_cursor', gp_tcursor_encode(ARRAY['i', a.id::text])) AS j
          FROM assignments a
          JOIN tasks t ON t.id = a.task_id
          LEFT JOIN reports r ON r.id = a.report_id
         WHERE a.worker_id = p_actor
           AND (v_state IS NULL OR a.state = v_state)
           AND (v_task IS NULL OR a.task_id = v_task)
           AND (v_cur IS NULL OR a.id < v_cur_id)
         ORDER BY a.id DESC
         LIMIT v_limit + 1) x;
    RETURN gp_page(v_items, v_limit);
END
$$;

-- One assignment with its report, check-ins and history: for its worker, or staff and
-- auditors over the task's unit; 404 assignment_not_found otherwise.
CREATE FUNCTION gp_assignment_get(p_actor bigint, p_assignment bigint) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    a assignments;
    t tasks;
    v_staff boolean;
BEGIN
    SELECT * INTO a FROM assignments WHERE id = p_assignment;
    IF FOUND THEN
        SELECT * INTO t FROM tasks WHERE id = a.task_id;
        v_staff := gp_report_reader(p_actor, t.unit_id, a.worker_id);
    END IF;
    IF NOT FOUND OR NOT (v_staff OR a.worker_id = p_actor) THEN
        PERFORM gp_raise('404', 'assignment_not_found', 'assignment not found', 'assignment_id');
    END IF;
    RETURN gp_assignment_json(a) || jsonb_build_object(
        'task', gp_task_json(t, v_staff),
        'report', (SELECT gp_report_json(r) FROM reports r WHERE r.id = a.report_id),
        'checkins', (SELECT coalesce(jsonb_agg(gp_checkin_json(c) ORDER BY c.at, c.id), '[]')
                       FROM checkins c WHERE c.assignment_id = a.id),
        'events', (SELECT coalesce(jsonb_agg(jsonb_build_object(
                        'id', e.id, 'at', e.at, 'actor_id', e.actor_id, 'timer', e.timer,
                        'from', e.from_state, 'to', e.to_state, 'reason', e.reason)
                        ORDER BY e.id), '[]')
                     FROM assignment_events e WHERE e.assignment_id = a.id));
END
$$;

-- The history of a task and its assignments, in order (staff and auditors over its unit).
-- p_args: {cursor?, limit?}. Items: {id, at, kind: "task"|"assignment", event, assignment_id,
-- worker_id, actor_id, timer, from, to, reason, data}.
CREATE FUNCTION gp_task_history(p_actor bigint, p_task bigint, p_args jsonb DEFAULT '{}')
RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_args jsonb;
    v_limit int;
    v_cur text[];
    v_cur_id bigint;
    v_items jsonb;
BEGIN
    v_args := gp_targ_object(p_args, ARRAY['cursor', 'limit']);
    IF NOT EXISTS (SELECT 1 FROM tasks t WHERE t.id = p_task
                      AND gp_has_role(p_actor, gp_reader_roles(), t.unit_id)) THEN
        PERFORM gp_raise('404', 'task_not_found', 'task not found', 'task_id');
    END IF;
    SELECT lim, cursor INTO v_limit, v_cur FROM gp_page_args(v_args, 'h', 1);
    v_cur_id := coalesce(gp_tcursor_bigint(v_cur[1]), 0);
    SELECT coalesce(jsonb_agg(x.j ORDER BY x.id), '[]') INTO v_items FROM (
        SELECT e.id, jsonb_build_object(
                   'id', e.id, 'at', e.at, 'kind', e.kind, 'event', e.event,
                   'assignment_id', e.assignment_id, 'worker_id', e.worker_id,
                   'actor_id', e.actor_id, 'timer', e.timer, 'from', e.from_state,
                   'to', e.to_state, 'reason', e.reason, 'data', e.data,
                   '_cursor', gp_tcursor_encode(ARRAY['h', e.id::text])) AS j
          FROM (SELECT te.id, te.at, 'task' AS kind, te.event, NULL::bigint AS assignment_id,
                       NULL::bigint AS worker_id, te.actor_id, te.timer, te.from_state,
                       te.to_state, te.reason, te.data
                  FROM task_events te WHERE te.task_id = p_task AND te.id > v_cur_id
                UNION ALL
                SELECT ae.id, ae.at, 'assignment', 'assignment.' || ae.to_state, ae.assignment_id,
                       ae.worker_id, ae.actor_id, ae.timer, ae.from_state, ae.to_state,
                       ae.reason, NULL
                  FROM assignment_events ae WHERE ae.task_id = p_task AND ae.id > v_cur_id) e
         ORDER BY e.id
         LIMIT v_limit + 1) x;
    RETURN gp_page(v_items, v_limit);
END
$$;

------------------------------------------------------------------------------------------
-- Timers
------------------------------------------------------------------------------------------
-- Runs every timer that is due by the database clock, in one transaction, and returns what
-- the server must refresh in Redis:
--   {"expired", "approved", "closed", "released", "skipped",
--    "effects": {"awards": [gp_task_award's jsonb, which carries txn_id, task_id,
--    assignment_id, worker_id, balance/available, pending, version, ...],
--    "gates": [{"task_id", "unit_id", "free_slots", "slots_version"}]} (00_helpers.sql),
--    "errors": [{"task_id", "sqlstate", "message"}], "more": bool}
-- (a) claims due (due_at <= now()) expire; (b) submitted reports whose review window ended are
-- approved and paid, one set-based gp_task_award_many per task (a report whose worker's
-- accounts another transaction holds stays due for the next call; "skipped" counts it); (c) open tasks past ends_at, or with every slot approved, close (their
-- live claims expire); (d) closed/cancelled tasks with nothing live or submitted and past
-- release_after get their unused reservation back.
-- Work is grouped per task: each due task is locked FOR UPDATE SKIP LOCKED, so any number of
-- instances sweep at once and each effect happens once (every path that changes a task's
-- assignments holds that lock). A task busy elsewhere is skipped and picked up next time.
-- p_batch bounds the effects per call (at most 32 tasks per call, each in its own
-- subtransaction: one failing task is reported in "errors" and does not stop the others).
-- p_hold_ms (timers.sweep_hold) bounds how long a call holds task rows: once it has been
-- running that long it takes no further task and returns, so that the commit frees the rows a
-- report or a decision may be waiting for (NULL: no bound). "more": call again at once.
CREATE FUNCTION gp_timers_sweep(p_batch int, p_hold_ms int DEFAULT NULL) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_started timestamptz := clock_timestamp();
    v_cut boolean := false;
    v_budget int := greatest(1, least(coalesce(p_batch, 200), 10000));
    v_max_tasks int;
    v_ncand int := 0;
    v_task bigint;
    t tasks;
    v_ids bigint[];
    v_workers bigint[];
    v_txns bigint[];
    -- Reports auto-approved per task per call when p_hold_ms is set: the task row is held
    -- until the commit and a report on that task waits for it, so one task's batch is kept to
    -- about p_hold_ms of work (the set-based award costs 0.15-0.5 ms per report: 2 per ms).
    v_task_cap int := CASE WHEN p_hold_ms IS NOT NULL THEN greatest(p_hold_ms, 1) * 2 END;
    l_capped boolean;
    v_was_released boolean;
    l_exp int;
    l_app int;
    l_closed int;
    l_rel int;
    l_awards jsonb;
    v_expired int := 0;
    v_approved int := 0;
    v_closed int := 0;
    v_released int := 0;
    v_skipped int := 0;
    v_awards jsonb := '[]';
    v_slots jsonb := '[]';
    v_errors jsonb := '[]';
BEGIN
    v_max_tasks := least(v_budget, 32);
    FOR v_task IN
        SELECT c.task_id FROM (
            (SELECT x.task_id, x.due_at AS due FROM assignments x
              WHERE x.state = 'claimed' AND x.due_at <= now() ORDER BY x.due_at LIMIT v_budget)
            UNION ALL
            (SELECT x.task_id, x.review_due_at FROM assignments x
              WHERE x.state = 'submitted' AND x.review_due_at <= now()
              ORDER BY x.review_due_at LIMIT v_budget)
            UNION ALL
            (SELECT x.id, x.ends_at FROM tasks x
              WHERE x.status = 'open' AND x.ends_at <= now() ORDER BY x.ends_at LIMIT v_budget)
            UNION ALL
            (SELECT x.id, x.release_after FROM tasks x
              WHERE x.status <> 'open' AND x.released_at IS NULL AND x.release_after <= now()
                AND x.occupied = x.approved   -- nothing claimed or submitted (0025)
              ORDER BY x.release_after LIMIT v_budget)) c
         GROUP BY c.task_id
         ORDER BY min(c.due), c.task_id
         LIMIT v_max_tasks
    LOOP
        v_ncand := v_ncand + 1;
        EXIT WHEN v_budget <= 0;
        IF p_hold_ms IS NOT NULL AND v_ncand > 1
           AND clock_timestamp() - v_started >= p_hold_ms * interval '1 millisecond' THEN
            v_cut := true;
            EXIT;
        END IF;
        BEGIN
            SELECT * INTO t FROM tasks WHERE id = v_task FOR UPDATE SKIP LOCKED;
            IF NOT FOUND THEN
                v_skipped := v_skipped + 1;
                CONTINUE;
            END IF;
            l_exp := 0; l_app := 0; l_closed := 0; l_rel := 0; l_awards := '[]';
            -- (a) claim expiry
            l_exp := gp_assignments_move(v_task,
                ARRAY(SELECT x.id FROM assignments x
                       WHERE x.task_id = v_task AND x.state = 'claimed' AND x.due_at <= now()
                       ORDER BY x.due_at, x.id LIMIT v_budget FOR UPDATE),
                'claimed', 'expired', NULL, 'claim_expiry', 'claim_expired');
            -- (b) auto-approval: one set-based gp_task_award_many per task (it locks the
            -- reservation and every worker's accounts in id order, skipping busy ones: those
            -- assignments stay due for the next sweep). Only the paid ones move.
            SELECT coalesce(array_agg(x.id ORDER BY x.review_due_at, x.id), '{}'),
                   coalesce(array_agg(x.worker_id ORDER BY x.review_due_at, x.id), '{}')
              INTO v_ids, v_workers
              FROM (SELECT y.id, y.worker_id, y.review_due_at FROM assignments y
                     WHERE y.task_id = v_task AND y.state = 'submitted'
                       AND y.review_due_at <= now()
                     ORDER BY y.review_due_at, y.id
                     LIMIT greatest(least(v_budget - l_exp, coalesce(v_task_cap, v_budget)), 0)
                       FOR UPDATE) x;
            -- more due reports than one call takes of a task: the rest in the next call
            l_capped := coalesce(cardinality(v_ids) >= v_task_cap AND v_task_cap < v_budget - l_exp,
                                 false);
            IF l_capped THEN
                v_cut := true;
            END IF;
            IF cardinality(v_ids) > 0 THEN
                l_awards := gp_task_award_many(v_task, v_ids, v_workers, t.reward, NULL);
                v_skipped := v_skipped + cardinality(v_ids) - jsonb_array_length(l_awards);
                SELECT coalesce(array_agg((w ->> 'assignment_id')::bigint ORDER BY n), '{}'),
                       coalesce(array_agg((w ->> 'txn_id')::bigint ORDER BY n), '{}')
                  INTO v_ids, v_txns
                  FROM jsonb_array_elements(l_awards) WITH ORDINALITY x (w, n);
            END IF;
            IF cardinality(v_ids) > 0 THEN
                l_app := gp_assignments_move(v_task, v_ids, 'submitted', 'approved', NULL,
                    'auto_approval', 'review_window_elapsed', v_txns);
                IF l_app <> cardinality(v_ids) THEN
                    RAISE EXCEPTION 'auto-approval moved % of % assignments', l_app,
                                    cardinality(v_ids);
                END IF;
            END IF;
            -- (c) close (left for the next call when the batch is used up)
            SELECT * INTO t FROM tasks WHERE id = v_task;
            IF v_budget - l_exp - l_app > 0 AND NOT l_capped AND t.status = 'open'
               AND (t.ends_at <= now() OR t.approved >= t.slots) THEN
                t := gp_task_set_state(v_task, 'closed', NULL, 'task_close',
                         CASE WHEN t.approved >= t.slots THEN 'all_slots_approved'
                              ELSE 'ends_at_reached' END);
                l_closed := 1;
            END IF;
            -- (d) release the unused reservation
            IF v_budget - l_exp - l_app - l_closed > 0 AND NOT l_capped THEN
                v_was_released := t.released_at IS NOT NULL;
                t := gp_task_settle(v_task, NULL, 'reservation_release');
                IF NOT v_was_released AND t.released_at IS NOT NULL THEN
                    l_rel := 1;
                END IF;
            END IF;
            v_expired := v_expired + l_exp;
            v_approved := v_approved + l_app;
            v_closed := v_closed + l_closed;
            v_released := v_released + l_rel;
            v_awards := v_awards || l_awards;
            v_budget := v_budget - greatest(l_exp + l_app + l_closed + l_rel, 1);
            IF l_exp + l_app + l_closed + l_rel > 0 THEN
                v_slots := v_slots || jsonb_build_array(gp_task_slots_json(t));
            END IF;
        EXCEPTION WHEN OTHERS THEN
            v_errors := v_errors || jsonb_build_array(jsonb_build_object(
                            'task_id', v_task, 'sqlstate', SQLSTATE, 'message', SQLERRM));
        END;
    END LOOP;
    RETURN jsonb_build_object('expired', v_expired, 'approved', v_approved, 'closed', v_closed,
                              'released', v_released, 'skipped', v_skipped, 'errors', v_errors,
                              'effects', jsonb_build_object('awards', v_awards, 'gates', v_slots),
                              'more', v_budget <= 0 OR v_ncand >= v_max_tasks OR v_cut);
END
$$;

