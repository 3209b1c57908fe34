-- scripts/bench/shapes.sql -- the minimal logical shapes of issue 12 (docs/BENCHMARKS.md,
-- "Logical shapes"): the least SQL that a ledger with the same invariants must do for an award,
-- a report submission, a claim and a merchant charge. Own tables in schema `shape`, no
-- gridpoints function, the column types and indexes a real ledger needs:
--
--   accounts     running balance and version per account, non-negative (CHECK: a refused
--                payment aborts, as gp_ledger_refuse does)
--   txns         one row per ledger transaction; (kind, ref) unique is the exactly-once key
--                (one award per assignment, one charge per idempotency key)
--   postings     double entry with the account's version and running balance; (account_id, id)
--                indexed for statements; foreign keys to txns and accounts
--   tasks        slots and a claimed counter, guarded (claimed <= slots)
--   assignments  (task_id, worker_id) unique (one claim per worker and task), (worker_id, id)
--                for a worker's list; state not indexed; fillfactor 90 so updates can be HOT
--   reports      one per assignment (unique), idempotent by (worker_id, client_report_id)
--   events       the history: one row per state change, no row locks, no foreign key
--   idempotency  a merchant's idempotency record with its reply
--
-- The statements themselves are the pgbench scripts scripts/bench/shape_*.pgb (one statement
-- each, one round trip, autocommit: one commit), run by scripts/bench.sh at the concurrency of
-- the HTTP scenario they are compared with, and counted by scripts/bench/shapecost.py.
--
--   psql -v workers=100000 -v assignments=16000 -f shapes.sql
-- Account ids: workers 1 .. :workers (1,000 points each), task budgets (reservations)
-- 1000001 .. 1000040, merchants 2000001 .. 2000020. Tasks 1 .. 40 hold the :assignments claimed
-- assignments of the submission shape (ids 1 .. :assignments); tasks 41 .. 240 are open for
-- the claim shape (1,000,000 slots each); storm tasks are added by the bench (100 slots).

\set ON_ERROR_STOP on
SET client_min_messages = warning;
DROP SCHEMA IF EXISTS shape CASCADE;
CREATE SCHEMA shape;

CREATE TABLE shape.accounts (
    id bigint PRIMARY KEY,
    kind text NOT NULL,
    owner_id bigint NOT NULL,
    balance bigint NOT NULL CHECK (balance >= 0),
    version bigint NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE shape.txns (
    id bigserial PRIMARY KEY,
    kind text NOT NULL,
    ref text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (kind, ref));
CREATE TABLE shape.postings (
    id bigserial PRIMARY KEY,
    txn_id bigint NOT NULL REFERENCES shape.txns (id),
    account_id bigint NOT NULL REFERENCES shape.accounts (id),
    amount bigint NOT NULL,
    account_version bigint NOT NULL,
    balance_after bigint NOT NULL);
CREATE INDEX ON shape.postings (account_id, id);
CREATE TABLE shape.tasks (
    id bigint PRIMARY KEY,
    unit_id bigint NOT NULL,
    reward bigint NOT NULL,
    slots int NOT NULL,
    claimed int NOT NULL DEFAULT 0 CHECK (claimed <= slots),
    version bigint NOT NULL DEFAULT 0,
    ends_at timestamptz NOT NULL) WITH (fillfactor = 90);
CREATE TABLE shape.assignments (
    id bigserial PRIMARY KEY,
    task_id bigint NOT NULL REFERENCES shape.tasks (id),
    worker_id bigint NOT NULL,
    state text NOT NULL,
    version int NOT NULL DEFAULT 0,
    claimed_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (task_id, worker_id)) WITH (fillfactor = 90);
CREATE INDEX ON shape.assignments (worker_id, id);
CREATE TABLE shape.reports (
    id bigserial PRIMARY KEY,
    assignment_id bigint NOT NULL UNIQUE REFERENCES shape.assignments (id),
    worker_id bigint NOT NULL,
    client_report_id text NOT NULL,
    body jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (worker_id, client_report_id));
CREATE TABLE shape.events (
    id bigserial PRIMARY KEY,
    assignment_id bigint NOT NULL,
    task_id bigint NOT NULL,
    worker_id bigint NOT NULL,
    from_state text,
    to_state text NOT NULL,
    at timestamptz NOT NULL DEFAULT now());
CREATE TABLE shape.idempotency (
    key text PRIMARY KEY,
    merchant_id bigint NOT NULL,
    reply jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now());
-- pgbench has no per-client counter: the shapes take their next assignment, claimer, award
-- and charge from these.
CREATE SEQUENCE shape.submit_seq;
CREATE SEQUENCE shape.claimer_seq;
CREATE SEQUENCE shape.award_seq;
CREATE SEQUENCE shape.charge_seq;

INSERT INTO shape.accounts (id, kind, owner_id, balance)
SELECT i, 'worker', i, 1000 FROM generate_series(1, :workers) i;
INSERT INTO shape.accounts (id, kind, owner_id, balance)
SELECT 1000000 + i, 'reservation', i, 1000000000 FROM generate_series(1, 40) i;
INSERT INTO shape.accounts (id, kind, owner_id, balance)
SELECT 2000000 + i, 'merchant', i, 0 FROM generate_series(1, 20) i;
INSERT INTO shape.tasks (id, unit_id, reward, slots, ends_at)
SELECT i, i, 10, CASE WHEN i <= 40 THEN :assignments ELSE 1000000 END, now() + interval '1 day'
  FROM generate_series(1, 240) i;
INSERT INTO shape.assignments (id, task_id, worker_id, state)
SELECT i, 1 + i % 40, i, 'claimed' FROM generate_series(1, :assignments) i;
SELECT setval('shape.assignments_id_seq', :assignments);
UPDATE shape.tasks t SET claimed = x.n FROM (SELECT task_id, count(*) AS n FROM shape.assignments
                                              GROUP BY 1) x WHERE t.id = x.task_id;
-- the claimers of the claim shapes: workers that hold no assignment yet
SELECT setval('shape.claimer_seq', :assignments);
VACUUM ANALYZE shape.accounts, shape.txns, shape.postings, shape.tasks, shape.assignments,
    shape.reports, shape.events, shape.idempotency;
GRANT USAGE ON SCHEMA shape TO gp_app;
GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA shape TO gp_app;
GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA shape TO gp_app;
