-- sql/migrations/0026_set_sweeps.sql
-- Set-based sweeps (issue 12 part 3; docs/LEDGER.md "Locks, hot rows and deadlocks").
--
-- gp_task_award_many and gp_ledger_sweep (sql/functions/30_ledger.sql) now post a batch of
-- ledger transactions in one statement and update each account ONCE per batch: the task's
-- reservation pays N awards with one UPDATE whose version grows by N (its N postings carry
-- versions v+1 .. v+N and the running balance, a window sum). accounts_guard required every
-- update to raise the version by exactly one; it now requires the version to grow (an update
-- that moves no version is still refused; identity columns, 0024's street_id included, stay
-- immutable). That the version equals the number of postings, and the balance their sum, is
-- what gp_ledger_check verifies over the whole log (checks 2 and 3), as before.
DROP TRIGGER accounts_guard ON accounts;
CREATE TRIGGER accounts_guard BEFORE UPDATE ON accounts FOR EACH ROW
    WHEN (NEW.id <> OLD.id OR NEW.kind <> OLD.kind OR NEW.owner_id <> OLD.owner_id
          OR NEW.unit_id IS DISTINCT FROM OLD.unit_id OR NEW.created_at <> OLD.created_at
          OR NEW.street_id <> OLD.street_id OR NEW.version <= OLD.version)
    EXECUTE FUNCTION gp_accounts_immutable();
