-- sql/migrations/0020_lean_tasks.sql
-- The lean write path of the work loop (issue 12) and issue 17 part 5 for its tables.
--
-- Every insert into tasks, assignments, reports, checkins, task_events and assignment_events
-- (sql/functions/40_tasks.sql, the only writer) now passes street_id itself, taken from a row
-- it already holds, so the BEFORE INSERT triggers of 0017 that looked it up once per row are
-- dropped for these tables. street_id stays NOT NULL: an insert that forgets it fails.
-- (The trigger functions stay: persons, role_grants and the merchants' tables still use them.)
DROP TRIGGER tasks_0street ON tasks;
DROP TRIGGER assignments_0street ON assignments;
DROP TRIGGER reports_0street ON reports;
DROP TRIGGER checkins_0street ON checkins;
DROP TRIGGER task_events_0street ON task_events;
DROP TRIGGER assignment_events_0street ON assignment_events;

-- Foreign keys that check nothing the assignment's key does not: a history row and a report
-- name their assignment (checked), whose task and worker never change; task_id and worker_id
-- are copies kept for the indexes that read by task or worker. Each one cost a lookup and a
-- KEY SHARE row lock (written to the WAL) per insert on the hot path.
ALTER TABLE assignment_events DROP CONSTRAINT assignment_events_task_id_fkey,
                              DROP CONSTRAINT assignment_events_worker_id_fkey;
ALTER TABLE reports DROP CONSTRAINT reports_task_id_fkey,
                    DROP CONSTRAINT reports_worker_id_fkey;
