-- sql/migrations/0019_lean_ledger.sql
-- The lean write path of the ledger (issue 12; docs/LEDGER.md "Locks, hot rows and deadlocks").
-- The posting functions (sql/functions/30_ledger.sql) now write each essential row once; this
-- migration removes the per-row checks that repeated, on every posting, what an invariant
-- already guarantees more cheaply.
--
-- postings.txn_id -> ledger_txns: the foreign key ran one `SELECT ... FOR KEY SHARE` per
-- posting (and wrote a row lock on the transaction row each time), and the deferred
-- constraint trigger postings_balanced re-summed the whole transaction once per posting at
-- commit (the ledger_txns_balanced trigger already does it once per transaction). Both are
-- replaced by one statement-level check per INSERT: every posting must belong to a ledger
-- transaction created by the current database transaction. With that,
--   * a posting cannot name a missing transaction (what the key checked at insert), and ledger
--     transactions are never deleted or truncated (ledger_txns_append_only/_no_truncate), so
--     it cannot lose it later either (what the key checked on delete);
--   * a posting cannot be added to a transaction of an earlier database transaction (what
--     postings_balanced caught), and every transaction of this one is re-checked at commit by
--     ledger_txns_balanced (>= 2 postings summing to zero).
-- gp_ledger_check still verifies postings against transactions and accounts over the whole log.

ALTER TABLE postings DROP CONSTRAINT postings_txn_id_fkey;
DROP TRIGGER postings_balanced ON postings;

CREATE FUNCTION postings_of_this_xact() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    v_txn bigint;
BEGIN
    SELECT n.txn_id INTO v_txn FROM new_postings n
      LEFT JOIN public.ledger_txns t ON t.id = n.txn_id
     WHERE t.xid IS DISTINCT FROM pg_current_xact_id()
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'a posting must belong to a ledger transaction of this database transaction (txn %)',
            v_txn USING ERRCODE = 'GP500', HINT = 'unbalanced_transaction';
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER postings_of_this_xact AFTER INSERT ON postings
    REFERENCING NEW TABLE AS new_postings
    FOR EACH STATEMENT EXECUTE FUNCTION postings_of_this_xact();

-- The other foreign keys onto ledger_txns: every one of these columns is set by the function
-- that created the referenced ledger transaction, in the same database transaction, from the id
-- gp_ledger_post_core/_legs returned (point_lots: gp_worker_add_lot also checks that the
-- transaction credited the worker), and a ledger transaction can never be updated, deleted or
-- truncated (ledger_txns_append_only, ledger_txns_no_truncate). So the key could neither fail
-- at insert nor later; it only cost, per row written, a `SELECT ... FOR KEY SHARE` and a row
-- lock written on the transaction row (which the audit sealer then reads past).
ALTER TABLE pending_points DROP CONSTRAINT pending_points_award_txn_id_fkey;
ALTER TABLE pending_points DROP CONSTRAINT pending_points_vest_txn_id_fkey;
ALTER TABLE point_lots DROP CONSTRAINT point_lots_earned_txn_id_fkey;
ALTER TABLE point_lots DROP CONSTRAINT point_lots_expire_txn_id_fkey;
ALTER TABLE vouchers DROP CONSTRAINT vouchers_hold_txn_id_fkey;
ALTER TABLE vouchers DROP CONSTRAINT vouchers_close_txn_id_fkey;
ALTER TABLE charges DROP CONSTRAINT charges_txn_id_fkey;
ALTER TABLE refunds DROP CONSTRAINT refunds_txn_id_fkey;
ALTER TABLE settlements DROP CONSTRAINT settlements_txn_id_fkey;
