-- scripts/bench/dataset.sql -- the benchmark data set: the demo street (loaded first by
-- `gridpointsd demo-data`) scaled up with set-based SQL.
--
--   psql -X -v ON_ERROR_STOP=1 -v workers=100000 -v hist_tasks=20000 -v open_per_grid=15 \
--        -v seed=<random> -f scripts/bench/dataset.sql  (as the superuser, after demo-data)
--
-- What it adds to the street of 8 communities, 100 grids and 624 micro-grids:
--   * :workers workers (persons + a 'worker' role on their micro-grid + a live session whose
--     token we generate, so the load generators can act as them; tokens in bench.workers);
--   * a session for the street admin and every grid staff member (bench.staff);
--   * :hist_tasks closed tasks of the past year at grid level, 60 slots each, 45..55 of them
--     approved and paid, the rest released: tasks + assignments rows, and the ledger they
--     imply: one issue, 108 grants, then per task a reserve, one award per approved slot and a
--     release (20,000 tasks -> 1,040,109 ledger transactions, 2,080,218 postings), with every
--     account's balance and version, every posting's version and running balance, and the
--     workers' earnings per month and all-time, exactly as gp_ledger_post_legs and
--     gp_task_award would have left them;
--   * open tasks published through gp_task_publish itself (triggers on): :open_per_grid per
--     grid, 10 per community, 20 at street level, spread over the street's map.
--
-- The bulk part runs with session_replication_role = replica, which switches off the
-- append-only triggers, the deferred balance checks and the foreign-key triggers for this
-- transaction only; gp_ledger_check() (run by scripts/bench.sh afterwards) proves the result is
-- a sound ledger. History rows that nothing reads on the measured paths are not generated:
-- reports, task/assignment events, audit and outbox rows of the past year.
--
-- Geography: grid k (0..99) owns the cell (row k / 10, column k % 10) of a 10 x 10 map of
-- 0.004 degree cells from (30.640 N, 104.060 E): about 4.4 km x 3.9 km, the size of a central
-- Chengdu street.

\set ON_ERROR_STOP on
SET client_min_messages = warning;

BEGIN;
SET LOCAL session_replication_role = replica;
SET LOCAL work_mem = '512MB';

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'bench') THEN
        RAISE EXCEPTION 'the benchmark data set is already loaded (schema bench exists)';
    END IF;
END
$$;

-- Reserves n ids of a sequence and returns the first.
CREATE FUNCTION pg_temp.reserve_ids(p_seq regclass, p_n bigint) RETURNS bigint
LANGUAGE sql AS $$
    SELECT setval(p_seq, nextval(p_seq) + p_n - 1) - p_n + 1
$$;

CREATE SCHEMA bench;
GRANT USAGE ON SCHEMA bench TO gp_app;

------------------------------------------------------------------------------------------
-- The street, its grids and micro-grids
------------------------------------------------------------------------------------------
CREATE TEMP TABLE b_street AS
SELECT id, path FROM org_units WHERE level = 'street' AND name = '锦江区示范街道';
DO $$
BEGIN
    IF (SELECT count(*) FROM b_street) <> 1 THEN
        RAISE EXCEPTION 'load the demo street first (gridpointsd demo-data)';
    END IF;
END
$$;

CREATE TEMP TABLE b_grid AS
SELECT g.id, g.parent_id AS community, (row_number() OVER (ORDER BY g.id) - 1)::int AS k,
       (SELECT min(r.person_id) FROM role_grants r
         WHERE r.role = 'grid_staff' AND r.unit_id = g.id) AS staff
  FROM org_units g, b_street s
 WHERE g.level = 'grid' AND g.path <@ s.path;
ALTER TABLE b_grid ADD COLUMN lat0 double precision, ADD COLUMN lng0 double precision;
UPDATE b_grid SET lat0 = 30.640 + (k / 10) * 0.004, lng0 = 104.060 + (k % 10) * 0.004;

CREATE TEMP TABLE b_mg AS
SELECT m.id, m.parent_id AS grid, (row_number() OVER (ORDER BY m.id) - 1)::int AS k
  FROM org_units m, b_street s
 WHERE m.level = 'micro_grid' AND m.path <@ s.path;

------------------------------------------------------------------------------------------
-- Workers, their roles and sessions
------------------------------------------------------------------------------------------
CREATE TEMP TABLE b_w AS
SELECT i, x.p0 + i - 1 AS id, mg.id AS unit_id, mg.grid
  FROM generate_series(1, :workers) i
 CROSS JOIN (SELECT pg_temp.reserve_ids('persons_id_seq', :workers) AS p0) x
  JOIN b_mg mg ON mg.k = (i - 1) % (SELECT count(*) FROM b_mg);
ALTER TABLE b_w ADD PRIMARY KEY (id);

INSERT INTO persons (id, phone, name, unit_id, tags, password_hash, created_at, updated_at,
                     street_id)
SELECT w.id, '138' || lpad(w.i::text, 8, '0'),
       (ARRAY['王','李','张','刘','陈','杨','赵','黄','周','吴'])[w.i % 10 + 1] ||
       (ARRAY['秀英','建国','桂兰','志强','丽','军','芳','伟','敏','静','磊','洋'])[w.i % 12 + 1],
       w.unit_id,
       CASE w.i % 8 WHEN 0 THEN ARRAY['party_member'] WHEN 1 THEN ARRAY['mediator']
            WHEN 2 THEN ARRAY['first_aid'] WHEN 3 THEN ARRAY['building_head', 'party_member']
            WHEN 5 THEN ARRAY['volunteer_firefighter'] WHEN 7 THEN ARRAY['first_aid', 'mediator']
            ELSE ARRAY[]::text[] END,
       -- Nobody logs in with a password here: a hash no password matches.
       'pbkdf2-sha256$1000$AA==$AA==',
       now() - interval '400 days', now() - interval '400 days',
       street_of_unit(w.unit_id) -- the street_id triggers are off with the others here
  FROM b_w w;

INSERT INTO role_grants (person_id, role, unit_id, created_at, street_id)
SELECT id, CASE WHEN i % 4 = 0 THEN 'volunteer' ELSE 'worker' END, unit_id,
       now() - interval '400 days', street_of_unit(unit_id)
  FROM b_w;

-- bench.workers: n = 1..workers, the worker's token and a random point in their grid's cell
-- (where they stand when they list tasks nearby).
CREATE TABLE bench.workers AS
SELECT w.i AS n, w.id AS person_id, w.unit_id, w.grid AS grid_id,
       'bw' || lpad(w.id::text, 9, '0') || md5(:'seed' || '/w/' || w.id) AS token,
       round((g.lat0 + random() * 0.004)::numeric, 6)::double precision AS lat,
       round((g.lng0 + random() * 0.004)::numeric, 6)::double precision AS lng
  FROM b_w w JOIN b_grid g ON g.id = w.grid;
ALTER TABLE bench.workers ADD PRIMARY KEY (n);
CREATE UNIQUE INDEX ON bench.workers (person_id);

INSERT INTO sessions (token_hash, person_id, created_at, expires_at, addr)
SELECT sha256(convert_to(token, 'UTF8')), person_id, now(), now() + interval '1 day', 'bench'
  FROM bench.workers;

-- Staff: the street admin and each grid's staff member.
CREATE TABLE bench.staff AS
SELECT p.id AS person_id, r.role, r.unit_id,
       'bs' || lpad(p.id::text, 9, '0') || md5(:'seed' || '/s/' || p.id) AS token
  FROM persons p JOIN role_grants r ON r.person_id = p.id
 WHERE r.role IN ('street_admin', 'grid_staff')
   AND r.unit_id IN (SELECT id FROM b_grid UNION ALL SELECT id FROM b_street);
INSERT INTO sessions (token_hash, person_id, created_at, expires_at, addr)
SELECT DISTINCT ON (person_id) sha256(convert_to(token, 'UTF8')), person_id, now(),
       now() + interval '1 day', 'bench'
  FROM bench.staff;

------------------------------------------------------------------------------------------
-- Historical tasks (closed, paid, released) and their assignments
------------------------------------------------------------------------------------------
-- Per task j: grid j % 100, reward 10..50, 60 slots, n = 45..55 approved (50 on average).
CREATE TEMP TABLE b_t AS
SELECT j, g.id AS grid, g.staff, g.lat0, g.lng0,
       (10 + (j % 5) * 10)::bigint AS reward, 60 AS slots, 45 + (j * 7) % 11 AS n,
       now() - interval '365 days' + j * (interval '360 days' / :hist_tasks) AS t0
  FROM generate_series(0, :hist_tasks - 1) j
  JOIN b_grid g ON g.k = j % 100;
ALTER TABLE b_t ADD COLUMN id bigint, ADD COLUMN txn0 bigint, ADD COLUMN asg0 bigint;

-- Ledger transaction ids: 1 issue + 8 grants to communities + 100 grants to grids first, then
-- per task a block of n + 2 (reserve, n awards, release).
CREATE TEMP TABLE b_ids AS
SELECT pg_temp.reserve_ids('tasks_id_seq', :hist_tasks) AS task0,
       pg_temp.reserve_ids('ledger_txns_id_seq',
                           109 + (SELECT sum(n + 2) FROM b_t)) AS txn0,
       pg_temp.reserve_ids('assignments_id_seq', (SELECT sum(n) FROM b_t)) AS asg0;

UPDATE b_t t SET id = x.task0 + t.j,
                 txn0 = x.txn0 + 109 + o.off,
                 asg0 = x.asg0 + o.aoff
  FROM b_ids x,
       (SELECT j, sum(n + 2) OVER (ORDER BY j) - (n + 2) AS off,
               sum(n) OVER (ORDER BY j) - n AS aoff FROM b_t) o
 WHERE o.j = t.j;
ALTER TABLE b_t ADD PRIMARY KEY (j);

-- Workers of each grid, numbered 0..cnt-1 within it.
CREATE TEMP TABLE b_gw AS
SELECT id AS worker, grid, (row_number() OVER (PARTITION BY grid ORDER BY id) - 1)::int AS gk,
       count(*) OVER (PARTITION BY grid) AS cnt
  FROM b_w;
CREATE INDEX ON b_gw (grid, gk);
ANALYZE b_gw;

-- One row per award: task j, slot a (0..n-1), a distinct worker of the task's grid.
CREATE TEMP TABLE b_aw AS
SELECT x.j, x.task, x.a, x.asg, x.txn, x.reward, x.at, gw.worker
  FROM (SELECT t.j, t.id AS task, a, t.asg0 + a AS asg, t.txn0 + 1 + a AS txn, t.reward,
               t.t0 + interval '1 day' + a * interval '1 minute' AS at, t.grid,
               ((t.j * 7919 + a) % c.cnt)::int AS gk
          FROM b_t t
          JOIN (SELECT grid, count(*) AS cnt FROM b_gw GROUP BY grid) c ON c.grid = t.grid
         CROSS JOIN LATERAL generate_series(0, t.n - 1) a) x
  JOIN b_gw gw ON gw.grid = x.grid AND gw.gk = x.gk;

------------------------------------------------------------------------------------------
-- Accounts (ids reserved now, rows inserted at the end with their final balance and version)
------------------------------------------------------------------------------------------
-- Accounts that exist already (the issuance account; the budgets if the demo street has some
-- activity) keep their id and go on from their balance and version; the others get ids now
-- and are inserted at the end with their final balance and version.
CREATE TEMP TABLE b_acc (id bigint PRIMARY KEY, kind text, owner_id bigint, unit_id bigint,
                         is_new boolean NOT NULL DEFAULT true, base_balance bigint NOT NULL DEFAULT 0,
                         base_version bigint NOT NULL DEFAULT 0);
INSERT INTO b_acc (id, kind, owner_id, unit_id, is_new, base_balance, base_version)
SELECT id, kind, owner_id, unit_id, false, balance, version FROM accounts WHERE kind = 'issuance';
CREATE TEMP TABLE b_budget_units AS
SELECT id FROM b_street UNION SELECT DISTINCT community FROM b_grid UNION SELECT id FROM b_grid;
INSERT INTO b_acc (id, kind, owner_id, unit_id, is_new, base_balance, base_version)
SELECT a.id, a.kind, a.owner_id, a.unit_id, false, a.balance, a.version
  FROM accounts a JOIN b_budget_units u ON a.kind = 'budget' AND a.owner_id = u.id;
INSERT INTO b_acc (id, kind, owner_id, unit_id)
SELECT x.a0 + row_number() OVER (ORDER BY u.id) - 1, 'budget', u.id, u.id
  FROM b_budget_units u
  CROSS JOIN (SELECT pg_temp.reserve_ids('accounts_id_seq', greatest(1, (
                  SELECT count(*) FROM b_budget_units v
                   WHERE NOT EXISTS (SELECT 1 FROM accounts a
                                      WHERE a.kind = 'budget' AND a.owner_id = v.id)))) AS a0) x
 WHERE NOT EXISTS (SELECT 1 FROM accounts a WHERE a.kind = 'budget' AND a.owner_id = u.id);
INSERT INTO b_acc (id, kind, owner_id, unit_id)
SELECT x.a0 + t.j, 'reservation', t.id, t.grid
  FROM b_t t, (SELECT pg_temp.reserve_ids('accounts_id_seq', :hist_tasks) AS a0) x;
-- worker then worker_pending (the available account has the lower id, as gp_account_of does),
-- for every worker who earned something.
INSERT INTO b_acc (id, kind, owner_id, unit_id)
SELECT x.a0 + 2 * (e.r - 1) + k.o, k.kind, e.worker, w.unit_id
  FROM (SELECT worker, row_number() OVER (ORDER BY worker) AS r
          FROM (SELECT DISTINCT worker FROM b_aw) d) e
  JOIN b_w w ON w.id = e.worker
 CROSS JOIN (VALUES (0, 'worker'), (1, 'worker_pending')) k (o, kind)
 CROSS JOIN (SELECT pg_temp.reserve_ids('accounts_id_seq',
                                         2 * (SELECT count(DISTINCT worker) FROM b_aw)) AS a0) x;
CREATE INDEX ON b_acc (kind, owner_id);
ANALYZE b_acc;

------------------------------------------------------------------------------------------
-- Transactions and legs
------------------------------------------------------------------------------------------
CREATE TEMP TABLE b_tx (id bigint, kind text, actor bigint, refs jsonb, memo text,
                        created_at timestamptz);
CREATE TEMP TABLE b_leg (txn bigint, acc bigint, amount bigint);

-- Funding: each grid gets what its tasks reserve (net of releases) plus 10,000,000 for the
-- open tasks and the benchmarks; each community its grids' plus 10,000,000; the street issues
-- it all plus 50,000,000.
CREATE TEMP TABLE b_fund AS
SELECT g.id AS grid, g.community, g.k,
       coalesce((SELECT sum(t.slots * t.reward) FROM b_t t WHERE t.grid = g.id), 0)
       + 10000000 AS amount
  FROM b_grid g;
CREATE TEMP TABLE b_cfund AS
SELECT community, (row_number() OVER (ORDER BY community) - 1)::int AS k,
       sum(amount) + 10000000 AS amount
  FROM b_fund GROUP BY community;

INSERT INTO b_tx
SELECT x.txn0, 'issue', (SELECT min(person_id) FROM bench.staff WHERE role = 'street_admin'),
       jsonb_build_object('unit_id', s.id), 'annual budget (bench data set)',
       now() - interval '366 days'
  FROM b_ids x, b_street s;
INSERT INTO b_leg
SELECT x.txn0, coalesce(  -- the street's issuance account (0024), else the legacy global one
           (SELECT id FROM accounts WHERE kind = 'issuance' AND owner_id = (SELECT id FROM b_street)),
           (SELECT id FROM accounts WHERE kind = 'issuance' AND owner_id = 0)),
       -((SELECT sum(amount) FROM b_cfund) + 50000000)
  FROM b_ids x;
INSERT INTO b_leg
SELECT x.txn0, a.id, (SELECT sum(amount) FROM b_cfund) + 50000000
  FROM b_ids x, b_street s JOIN b_acc a ON a.kind = 'budget' AND a.owner_id = s.id;

INSERT INTO b_tx
SELECT x.txn0 + 1 + c.k, 'grant', (SELECT min(person_id) FROM bench.staff WHERE role = 'street_admin'),
       jsonb_build_object('from_unit_id', s.id, 'to_unit_id', c.community), 'to community',
       now() - interval '366 days' + interval '1 hour'
  FROM b_ids x, b_street s, b_cfund c;
INSERT INTO b_leg
SELECT x.txn0 + 1 + c.k, sa.id, -c.amount
  FROM b_ids x, b_cfund c, b_street s JOIN b_acc sa ON sa.kind = 'budget' AND sa.owner_id = s.id;
INSERT INTO b_leg
SELECT x.txn0 + 1 + c.k, ca.id, c.amount
  FROM b_ids x, b_cfund c JOIN b_acc ca ON ca.kind = 'budget' AND ca.owner_id = c.community;

INSERT INTO b_tx
SELECT x.txn0 + 9 + f.k, 'grant', (SELECT min(person_id) FROM bench.staff WHERE role = 'street_admin'),
       jsonb_build_object('from_unit_id', f.community, 'to_unit_id', f.grid), 'to grid',
       now() - interval '366 days' + interval '2 hours'
  FROM b_ids x, b_fund f;
INSERT INTO b_leg
SELECT x.txn0 + 9 + f.k, ca.id, -f.amount
  FROM b_ids x, b_fund f JOIN b_acc ca ON ca.kind = 'budget' AND ca.owner_id = f.community;
INSERT INTO b_leg
SELECT x.txn0 + 9 + f.k, ga.id, f.amount
  FROM b_ids x, b_fund f JOIN b_acc ga ON ga.kind = 'budget' AND ga.owner_id = f.grid;

-- Per task: reserve, awards, release.
INSERT INTO b_tx
SELECT t.txn0, 'reserve', t.staff, jsonb_build_object('task_id', t.id, 'unit_id', t.grid),
       NULL, t.t0
  FROM b_t t;
INSERT INTO b_leg
SELECT t.txn0, ga.id, -t.slots * t.reward FROM b_t t
  JOIN b_acc ga ON ga.kind = 'budget' AND ga.owner_id = t.grid;
INSERT INTO b_leg
SELECT t.txn0, ra.id, t.slots * t.reward FROM b_t t
  JOIN b_acc ra ON ra.kind = 'reservation' AND ra.owner_id = t.id;

INSERT INTO b_tx
SELECT a.txn, 'award', NULL,
       jsonb_build_object('task_id', a.task, 'assignment_id', a.asg, 'worker_id', a.worker),
       NULL, a.at
  FROM b_aw a;
INSERT INTO b_leg
SELECT a.txn, ra.id, -a.reward FROM b_aw a
  JOIN b_acc ra ON ra.kind = 'reservation' AND ra.owner_id = a.task;
INSERT INTO b_leg
SELECT a.txn, wa.id, a.reward FROM b_aw a
  JOIN b_acc wa ON wa.kind = 'worker' AND wa.owner_id = a.worker;

INSERT INTO b_tx
SELECT t.txn0 + t.n + 1, 'release', NULL,
       jsonb_build_object('task_id', t.id, 'unit_id', t.grid), NULL, t.t0 + interval '3 days'
  FROM b_t t;
INSERT INTO b_leg
SELECT t.txn0 + t.n + 1, ra.id, -(t.slots - t.n) * t.reward FROM b_t t
  JOIN b_acc ra ON ra.kind = 'reservation' AND ra.owner_id = t.id;
INSERT INTO b_leg
SELECT t.txn0 + t.n + 1, ga.id, (t.slots - t.n) * t.reward FROM b_t t
  JOIN b_acc ga ON ga.kind = 'budget' AND ga.owner_id = t.grid;

------------------------------------------------------------------------------------------
-- Into the real tables
------------------------------------------------------------------------------------------
-- street_id (0024): the one street of the data set, for transactions, postings and accounts
-- (the street_id triggers are off with the others here)
INSERT INTO ledger_txns (id, kind, actor_id, refs, memo, created_at, street_id)
SELECT x.id, x.kind, x.actor, x.refs, x.memo, x.created_at, (SELECT s.id FROM b_street s)
  FROM b_tx x ORDER BY x.id;

-- Postings: per account, the versions and the running balance go on from where the account
-- stood, in transaction order.
INSERT INTO postings (id, txn_id, account_id, amount, account_version, balance_after, street_id)
SELECT (SELECT pg_temp.reserve_ids('postings_id_seq', (SELECT count(*) FROM b_leg))) - 1
       + row_number() OVER (ORDER BY l.txn, l.acc),
       l.txn, l.acc, l.amount,
       a.base_version + row_number() OVER w, a.base_balance + sum(l.amount) OVER w,
       (SELECT id FROM b_street)
  FROM b_leg l JOIN b_acc a ON a.id = l.acc
WINDOW w AS (PARTITION BY l.acc ORDER BY l.txn)
 ORDER BY l.txn, l.acc;

CREATE TEMP TABLE b_acc_total AS
SELECT acc, sum(amount) AS total, count(*) AS n FROM b_leg GROUP BY acc;
INSERT INTO accounts (id, kind, owner_id, unit_id, balance, version, created_at, street_id)
SELECT a.id, a.kind, a.owner_id, a.unit_id, coalesce(s.total, 0), coalesce(s.n, 0),
       now() - interval '366 days', (SELECT id FROM b_street)
  FROM b_acc a LEFT JOIN b_acc_total s ON s.acc = a.id
 WHERE a.is_new;
UPDATE accounts a SET balance = a.balance + s.total, version = a.version + s.n
  FROM b_acc b JOIN b_acc_total s ON s.acc = b.id
 WHERE a.id = b.id AND NOT b.is_new;

INSERT INTO worker_earnings (person_id, period, points, street_id)
SELECT e.worker, e.period, e.points, p.street_id
  FROM (SELECT worker, to_char(at AT TIME ZONE 'Asia/Shanghai', 'YYYY-MM') AS period,
               sum(reward) AS points
          FROM b_aw GROUP BY 1, 2
        UNION ALL
        SELECT worker, 'all', sum(reward) FROM b_aw GROUP BY 1) e
  JOIN persons p ON p.id = e.worker;

INSERT INTO tasks (id, unit_id, publisher_id, title, description, category, reward, slots,
                   lat, lng, geofence_m, starts_at, ends_at, claim_ttl, review_window,
                   status, approved, occupied, reservation_txn, release_after, released_at,
                   release_txn, closed_at, version, created_at, updated_at, street_id)
SELECT t.id, t.grid, t.staff,
       (ARRAY['楼栋安全巡查', '独居老人探访', '邻里纠纷调解', '消防通道检查', '垃圾分类督导',
              '隐患排查上报'])[t.j % 6 + 1] || ' #' || t.j,
       'bench history', (ARRAY['patrol', 'visit', 'mediation', 'fire_safety', 'garbage',
                               'hazard'])[t.j % 6 + 1],
       t.reward, t.slots,
       t.lat0 + ((t.j * 13) % 97) / 97.0 * 0.004, t.lng0 + ((t.j * 29) % 89) / 89.0 * 0.004,
       300, t.t0, t.t0 + interval '2 days', interval '1 day', interval '1 day',
       'closed', t.n, t.n, t.txn0, t.t0 + interval '3 days', t.t0 + interval '3 days',
       t.txn0 + t.n + 1, t.t0 + interval '2 days', 2 * t.n + 3, t.t0, t.t0 + interval '3 days',
       street_of_unit(t.grid) -- the street_id triggers are off with the others here
  FROM b_t t;

INSERT INTO assignments (id, task_id, worker_id, state, claimed_at, due_at, submitted_at,
                         review_due_at, decided_at, award_txn, version, street_id)
SELECT a.asg, a.task, a.worker, 'approved', a.at - interval '20 hours', a.at,
       a.at - interval '2 hours', a.at + interval '22 hours', a.at, a.txn, 3, t.street_id
  FROM b_aw a JOIN tasks t ON t.id = a.task;

COMMIT;

------------------------------------------------------------------------------------------
-- Open tasks, published the normal way (triggers and checks on)
------------------------------------------------------------------------------------------
BEGIN;
CREATE TEMP TABLE b_open (unit_id bigint, actor bigint, lat0 double precision,
                          lng0 double precision, span double precision, i int);
-- Grid level, in the grid's own cell, by the grid's staff.
INSERT INTO b_open
SELECT g.id, g.staff, g.lat0, g.lng0, 0.004, i
  FROM b_grid g CROSS JOIN generate_series(1, :open_per_grid) i;
-- Community and street level, anywhere on the map, by the street admin.
INSERT INTO b_open
SELECT c.id, (SELECT min(person_id) FROM bench.staff WHERE role = 'street_admin'),
       30.640, 104.060, 0.040, i
  FROM (SELECT DISTINCT community AS id FROM b_grid) c CROSS JOIN generate_series(1, 10) i;
INSERT INTO b_open
SELECT s.id, (SELECT min(person_id) FROM bench.staff WHERE role = 'street_admin'),
       30.640, 104.060, 0.040, i
  FROM b_street s CROSS JOIN generate_series(1, 20) i;

SELECT count(gp_task_publish(o.actor, jsonb_build_object(
           'unit_id', o.unit_id,
           'title', (ARRAY['楼栋安全巡查', '独居老人探访', '邻里纠纷调解', '消防通道检查',
                           '垃圾分类督导', '隐患排查上报'])[o.i % 6 + 1] || ' (open ' || o.i || ')',
           'description', 'bench open task',
           'category', (ARRAY['patrol', 'visit', 'mediation', 'fire_safety', 'garbage',
                              'hazard'])[o.i % 6 + 1],
           'reward', 10 + (o.i % 5) * 10, 'slots', 5 + o.i % 16,
           'required_tags', CASE WHEN o.i % 10 = 0 THEN '["first_aid"]'::jsonb
                                 ELSE '[]'::jsonb END,
           'lat', round((o.lat0 + random() * o.span)::numeric, 6),
           'lng', round((o.lng0 + random() * o.span)::numeric, 6),
           'geofence_m', 300,
           'ends_at', to_char((now() + interval '30 days' + o.i * interval '1 hour') AT TIME ZONE 'UTC',
                              'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
           'claim_ttl_s', 86400, 'review_window_s', 86400))) AS open_tasks_published
  FROM b_open o;
COMMIT;
