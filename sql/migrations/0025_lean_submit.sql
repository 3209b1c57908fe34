-- sql/migrations/0025_lean_submit.sql
-- Issue 12 part 2: a report submission that does not write (or lock) the task row.
--
-- The task row kept one counter per assignment state, so claimed -> submitted decremented
-- `claimed` and incremented `submitted`: every report of a task serialised on the task row and
-- re-checked its 30 CHECK constraints. That move does not change what the claim gate needs --
-- the slot stays occupied -- so the row now keeps:
--   occupied  claimed + submitted + approved: the assignments that hold a slot (the gate:
--             free_slots = slots - occupied while open)
--   approved, rejected, released, expired: as before (each move into them already writes the
--             row: a decision, a release, an expiry)
-- and `claimed` / `submitted` are counted from `assignments` where they are shown (task JSON:
-- submitted = count of the task's submitted assignments, claimed = occupied - approved -
-- submitted; sql/functions/40_tasks.sql, gp_task_counts). "Nothing live or submitted" (the
-- settle and the release sweep) is occupied = approved.
ALTER TABLE tasks ADD COLUMN occupied int NOT NULL DEFAULT 0;
UPDATE tasks SET occupied = claimed + submitted + approved WHERE claimed + submitted + approved > 0;

-- Every CHECK of tasks is evaluated on every UPDATE of the row (PostgreSQL reads and prepares
-- each one per statement): 30 of them, most on columns written once at publish. They become
-- three with the same meaning -- a CHECK fails when its expression is false, and an AND is
-- false exactly when one of its terms is, NULL terms passing as before.
DO $$
DECLARE
    c text;
BEGIN
    FOR c IN SELECT conname FROM pg_constraint
              WHERE conrelid = 'public.tasks'::regclass AND contype = 'c' LOOP
        EXECUTE format('ALTER TABLE public.tasks DROP CONSTRAINT %I', c);
    END LOOP;
END
$$;
ALTER TABLE tasks DROP COLUMN claimed, DROP COLUMN submitted;
ALTER TABLE tasks
    -- what publish and edits set
    ADD CONSTRAINT tasks_fields CHECK (
        length(title) BETWEEN 1 AND 200 AND length(description) <= 5000
        AND length(category) BETWEEN 1 AND 32 AND reward > 0 AND slots BETWEEN 1 AND 10000
        AND cardinality(required_tags) <= 16
        AND lat BETWEEN -90 AND 90 AND lng BETWEEN -180 AND 180
        AND geofence_m BETWEEN 10 AND 50000
        AND claim_ttl BETWEEN '1 second' AND '30 days'
        AND review_window BETWEEN '1 second' AND '30 days'
        AND sync_grace BETWEEN '0' AND '30 days'
        AND evidence_photos BETWEEN 0 AND 20
        AND slots::numeric * reward <= 9223372036854775807
        AND (lat IS NULL) = (lng IS NULL)
        AND (geofence_m IS NULL OR lat IS NOT NULL)
        AND (NOT geofence_enforced OR geofence_m IS NOT NULL)
        AND ends_at > starts_at),
    -- the lifecycle
    ADD CONSTRAINT tasks_status CHECK (
        status IN ('open', 'closed', 'cancelled')
        AND (status = 'open') = (release_after IS NULL)
        AND (status = 'closed') = (closed_at IS NOT NULL)
        AND (status = 'cancelled') = (cancelled_at IS NOT NULL)
        AND (released_at IS NULL OR (status <> 'open' AND occupied = approved))),
    -- Invariant 3 (never more live or final assignments than slots) and the counters
    ADD CONSTRAINT tasks_counters CHECK (
        occupied <= slots AND approved BETWEEN 0 AND occupied
        AND rejected >= 0 AND released >= 0 AND expired >= 0);
COMMENT ON COLUMN tasks.occupied IS
    'assignments holding a slot: claimed + submitted + approved (free_slots = slots - occupied)';

-- assignments: the five CHECKs become one (same argument as above), and pages keep room for
-- a new row version next to the old one (fillfactor): an update that changes no indexed column
-- can then be HOT. (A state change is not: the sweeps' partial indexes on state need it.)
ALTER TABLE assignments
    DROP CONSTRAINT assignments_state_check,
    DROP CONSTRAINT assignments_reason_check,
    DROP CONSTRAINT assignments_check,
    DROP CONSTRAINT assignments_check1,
    DROP CONSTRAINT assignments_check2,
    DROP CONSTRAINT assignments_check3,
    DROP CONSTRAINT assignments_check4,
    ADD CONSTRAINT assignments_rules CHECK (
        state IN ('claimed', 'submitted', 'approved', 'rejected', 'expired', 'released')
        AND length(reason) <= 500
        AND due_at > claimed_at
        AND (state NOT IN ('expired', 'released') OR ended_at IS NOT NULL)
        AND (state NOT IN ('submitted', 'approved', 'rejected')
             OR (submitted_at IS NOT NULL AND review_due_at IS NOT NULL))
        AND (state = 'approved') = (award_txn IS NOT NULL)
        AND (state NOT IN ('approved', 'rejected') OR decided_at IS NOT NULL));
ALTER TABLE assignments SET (fillfactor = 90);
ALTER TABLE tasks SET (fillfactor = 90);

-- Foreign keys from the work loop's rows to the person who acted: each check is a lookup and a
-- KEY SHARE lock written on that person's row -- on the reviewer's row for every decision
-- (decided_by and the history row's actor), and on the worker's for every claim and report.
-- A staff member deciding many reports turns their row into a pile of multixacts. They check
-- nothing the functions (sql/functions/40_tasks.sql, the only writers) have not checked: the
-- actor is the authenticated, active person whose role or area was checked before the write,
-- and gp_app cannot delete persons (0002 grants SELECT, INSERT, UPDATE), so a person that
-- existed stays. (As 0020 did for the history rows' task and worker.)
ALTER TABLE assignments DROP CONSTRAINT assignments_decided_by_fkey;
ALTER TABLE assignment_events DROP CONSTRAINT assignment_events_actor_id_fkey;
