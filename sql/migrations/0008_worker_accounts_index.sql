-- sql/0008_worker_accounts_index.sql
-- Performance fix found by `make bench` (docs/BENCHMARKS.md, "Findings").
--
-- gp_ledger_snapshot (0003), the page of the Redis reconciler, reads
--   WHERE kind IN ('worker', 'worker_pending') AND owner_id > $after
--   GROUP BY owner_id ORDER BY owner_id LIMIT $n
-- and the only index on those columns, UNIQUE (kind, owner_id), cannot return both kinds in
-- owner order: every page read and sorted every worker account after the cursor. That is
-- O(workers) per page and O(workers^2) per pass: with 100,000 workers a page took 100-200 ms
-- and a pass about 30 s of database CPU, at start-up and again every timers.reconcile_interval.
-- With this index a page is a range scan of about 2 x limit index entries, already grouped by
-- owner (about 1 ms), and the whole pass takes under 2 s.
--
-- A plain CREATE INDEX (migrations run in a transaction): it blocks writes to accounts while
-- it is built, about a second per million accounts.
CREATE INDEX accounts_worker_owner ON accounts (owner_id)
    WHERE kind IN ('worker', 'worker_pending');
