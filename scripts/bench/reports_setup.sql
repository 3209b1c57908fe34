-- scripts/bench/reports_setup.sql -- the report-and-award scenario: :tasks open tasks on grids
-- :grid0 .. :grid0 + :tasks - 1 (published with gp_task_publish by each grid's staff, reward 10,
-- a review window of 1 second so that auto-approval follows the report at once), and on each
-- one :per_task claimed assignments of distinct workers of that grid. The claims are made with
-- set-based SQL that leaves exactly what gp_task_claim leaves (assignment, counters, version,
-- history), because 2 x 16,000 one-by-one claims would take half a minute.
--
-- Fills bench.reports (name = :'name'): one row per assignment with its worker's token, the
-- grid staff who may decide it, and the report body (valid, made now, at the task's place).
--
--   psql -v name=http -v grid0=0 -v tasks=40 -v per_task=400 [-v review_s=1] -f reports_setup.sql
--
-- review_s (default 1): the tasks' review window; the history probe and the callgrind run
-- take a day, so that no timer sweep pays their reports while they are measured.

\set ON_ERROR_STOP on
\if :{?review_s}
\else
\set review_s 1
\endif
SET client_min_messages = warning;

CREATE TABLE IF NOT EXISTS bench.reports (
    name text, n int, task_id bigint, assignment_id bigint, worker_id bigint, staff_id bigint,
    token text, body text, PRIMARY KEY (name, n));
GRANT SELECT ON bench.reports TO gp_app;

BEGIN;
CREATE TEMP TABLE r_tasks ON COMMIT DROP AS
SELECT g.id AS grid, g.staff,
       ((gp_task_publish(g.staff, jsonb_build_object(
            'unit_id', g.id, 'title', '消防通道检查 (bench ' || :'name' || ')', 'category', 'fire_safety',
            'reward', 10, 'slots', :per_task, 'lat', g.lat, 'lng', g.lng, 'geofence_m', 300,
            'ends_at', to_char((now() + interval '1 day') AT TIME ZONE 'UTC',
                               'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
            'claim_ttl_s', 86400, 'review_window_s', :review_s))).body ->> 'id')::bigint AS task_id,
       g.lat, g.lng
  FROM (SELECT u.id, (row_number() OVER (ORDER BY u.id) - 1)::int AS k,
               (SELECT min(s.person_id) FROM bench.staff s
                 WHERE s.role = 'grid_staff' AND s.unit_id = u.id) AS staff,
               30.640 + ((row_number() OVER (ORDER BY u.id) - 1) / 10) * 0.004 + 0.002 AS lat,
               104.060 + ((row_number() OVER (ORDER BY u.id) - 1) % 10) * 0.004 + 0.002 AS lng
          FROM org_units u
         WHERE u.level = 'grid') g
 WHERE g.k >= :grid0 AND g.k < :grid0 + :tasks;

-- :per_task workers of each grid, the highest-numbered first (the other scenarios use the low
-- worker numbers).
CREATE TEMP TABLE r_claims ON COMMIT DROP AS
SELECT t.task_id, t.staff, t.lat, t.lng, w.person_id AS worker_id, w.token,
       nextval('assignments_id_seq') AS assignment_id
  FROM r_tasks t
  JOIN LATERAL (SELECT b.person_id, b.token FROM bench.workers b
                 WHERE b.grid_id = t.grid ORDER BY b.n DESC
                 OFFSET CASE WHEN :'name' = 'http' THEN 0 ELSE :per_task END
                 LIMIT :per_task) w ON true;

INSERT INTO assignments (id, task_id, worker_id, claimed_at, due_at, street_id)
SELECT c.assignment_id, c.task_id, c.worker_id, now(), least(now() + t.claim_ttl, t.ends_at),
       t.street_id
  FROM r_claims c JOIN tasks t ON t.id = c.task_id;
UPDATE tasks t SET occupied = occupied + x.n, version = version + x.n, updated_at = now()
  FROM (SELECT task_id, count(*) AS n FROM r_claims GROUP BY task_id) x
 WHERE t.id = x.task_id;
INSERT INTO assignment_events (assignment_id, task_id, worker_id, actor_id, from_state, to_state,
                               street_id)
SELECT c.assignment_id, c.task_id, c.worker_id, c.worker_id, NULL, 'claimed', a.street_id
  FROM r_claims c JOIN assignments a ON a.id = c.assignment_id;

INSERT INTO bench.reports (name, n, task_id, assignment_id, worker_id, staff_id, token, body)
SELECT :'name', row_number() OVER (ORDER BY random()), c.task_id, c.assignment_id, c.worker_id,
       c.staff, c.token,
       jsonb_build_object(
           'assignment_id', c.assignment_id,
           'client_report_id', 'bench-' || :'name' || '-' || c.assignment_id,
           'made_at', to_char(clock_timestamp() AT TIME ZONE 'UTC',
                              'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
           'lat', round((c.lat + 0.0003)::numeric, 6), 'lng', round((c.lng - 0.0002)::numeric, 6),
           'notes', '楼道消防通道畅通，灭火器在有效期内',
           'evidence', jsonb_build_array(jsonb_build_object(
               'url', 'https://img.example.cn/bench/' || c.assignment_id || '.jpg',
               'sha256', encode(sha256(convert_to(c.assignment_id::text, 'UTF8')), 'hex'))))::text
  FROM r_claims c;
COMMIT;

SELECT count(*) AS reports_ready FROM bench.reports WHERE name = :'name';
