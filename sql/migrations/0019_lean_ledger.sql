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

------------------------------------------------------------------------------------------
-- Issue 17 part 5 for the worker-owned ledger rows: pending points, lots, earnings and pay
-- codes carry the street of their worker (persons.street_id), co-located with the worker's
-- other rows. The ledger and merchant functions pass it explicitly (from the person row they
-- read anyway); a BEFORE INSERT trigger fills it from the worker only for a writer that does
-- not (seeds, test fixtures), and its WHEN clause keeps it from even being called otherwise.
------------------------------------------------------------------------------------------
CREATE FUNCTION street_id_from_worker() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    SELECT p.street_id INTO NEW.street_id FROM public.persons p
     WHERE p.id = (to_jsonb(NEW) ->> CASE TG_TABLE_NAME WHEN 'worker_earnings' THEN 'person_id'
                                                         ELSE 'worker_id' END)::bigint;
    -- worker_id has no foreign key (see 0003): a row of no known person gets the reference
    -- street 0 (docs/SCALING.md) instead of failing the insert.
    NEW.street_id := coalesce(NEW.street_id, 0);
    RETURN NEW;
END
$$;

ALTER TABLE pending_points ADD COLUMN street_id bigint;
ALTER TABLE point_lots ADD COLUMN street_id bigint;
ALTER TABLE worker_earnings ADD COLUMN street_id bigint;
ALTER TABLE paycodes ADD COLUMN street_id bigint;

UPDATE pending_points x SET street_id = coalesce(
    (SELECT p.street_id FROM persons p WHERE p.id = x.worker_id), 0);
UPDATE point_lots x SET street_id = coalesce(
    (SELECT p.street_id FROM persons p WHERE p.id = x.worker_id), 0);
UPDATE worker_earnings x SET street_id = coalesce(
    (SELECT p.street_id FROM persons p WHERE p.id = x.person_id), 0);
UPDATE paycodes x SET street_id = coalesce(
    (SELECT p.street_id FROM persons p WHERE p.id = x.worker_id), 0);

ALTER TABLE pending_points ALTER COLUMN street_id SET NOT NULL;
ALTER TABLE point_lots ALTER COLUMN street_id SET NOT NULL;
ALTER TABLE worker_earnings ALTER COLUMN street_id SET NOT NULL;
ALTER TABLE paycodes ALTER COLUMN street_id SET NOT NULL;

CREATE TRIGGER pending_points_0street BEFORE INSERT ON pending_points
    FOR EACH ROW WHEN (NEW.street_id IS NULL) EXECUTE FUNCTION street_id_from_worker();
CREATE TRIGGER point_lots_0street BEFORE INSERT ON point_lots
    FOR EACH ROW WHEN (NEW.street_id IS NULL) EXECUTE FUNCTION street_id_from_worker();
CREATE TRIGGER worker_earnings_0street BEFORE INSERT ON worker_earnings
    FOR EACH ROW WHEN (NEW.street_id IS NULL) EXECUTE FUNCTION street_id_from_worker();
CREATE TRIGGER paycodes_0street BEFORE INSERT ON paycodes
    FOR EACH ROW WHEN (NEW.street_id IS NULL) EXECUTE FUNCTION street_id_from_worker();
