-- sql/migrations/0022_audit_incremental.sql
-- Incremental verification passes (issue 12 part 6, docs/AUDIT.md §4). A clean pass ends with
-- the re-derived compact range and the sort key of the last transaction it walked; the next
-- pass starts there (cost proportional to what was sealed since), and a full pass from log
-- index 0 runs every audit.full_pass_interval, on request (`gridpointsd audit-verify --full`),
-- while an alarm stands, and whenever no verified base exists (a fresh log, this upgrade).
ALTER TABLE audit_head
    ADD COLUMN vfull            boolean,        -- the pass in progress re-derives from index 0
    ADD COLUMN vfrom            bigint,         -- the log index the pass in progress started at
    ADD COLUMN vbase_xid        xid8,           -- sort key of the last transaction of the last
    ADD COLUMN vbase_txn        bigint,         --   clean pass (log index verified_size - 1)
    ADD COLUMN vbase_frontier   bytea[],        -- its re-derived compact range (size verified_size)
    ADD COLUMN verified_from    bigint,         -- what the last clean pass covered:
    ADD COLUMN verified_full    boolean,        --   [verified_from, verified_size), full or not
    ADD COLUMN full_verified_at timestamptz,    -- end of the last clean full pass
    ADD COLUMN full_requested   boolean NOT NULL DEFAULT false;
