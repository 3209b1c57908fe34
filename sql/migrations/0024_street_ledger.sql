-- sql/migrations/0024_street_ledger.sql
-- The path to sharding (issue 17 part 5; docs/SCALING.md), the last tables: the ledger's
-- accounts, transactions, postings and policies, the audit trail of actions (audit_log) and
-- the outbox carry the street their row belongs to, so that PostgreSQL with Citus can
-- distribute them by street_id, co-located with the street's people, tasks and merchants.
--
-- Street 0 is the reference street of 0019: no org unit, the owner of the legacy global
-- system accounts and of rows that belong to no known street.
--
-- * accounts.street_id: the street of the account's owner (budget, care: the unit's street;
--   worker, worker_pending: the person's (persons.street_id); reservation, merchant, hold,
--   clearing, xhold: the street of the unit the account was created for). The system
--   accounts (issuance, expiry, settlement) are PER STREET from now on: owner_id = street_id =
--   the street's unit id, created on demand by gp_account_of(kind, street). The three global
--   ones of 0003 (owner 0) stay, with street 0, as LEGACY accounts: the ledger is append-only,
--   so their balances are not moved; they keep their postings and may still be posted to by a
--   caller that does not name a street (gp_account_of(kind, NULL)). gp_ledger_check's sums
--   hold over both (the trial balance is over every account).
-- * ledger_txns.street_id / postings.street_id: one street per transaction. gp_ledger_post_core
--   takes it from the accounts it locks anyway (statement (1)), refuses legs in two different
--   streets (409 cross_street_transaction; a leg in street 0, a legacy system account, goes
--   with any street) and writes it into ledger_txns and every posting in its one writing
--   statement. A posting carries its transaction's street (a posting to a legacy street-0
--   account lives with the transaction that made it). Existing rows: the street of the
--   transaction's non-zero accounts (0 when all its legs are legacy system accounts).
--   >>> Writers that insert into ledger_txns / postings themselves (a set-based award insert)
--   >>> must set ledger_txns.street_id (the street of the legs: the worker's, persons.street_id)
--   >>> and postings.street_id (= the transaction's). Until they do, the fallback triggers
--   >>> below fill them (per row, from refs.worker_id / refs.unit_id, and from the txn); the
--   >>> columns default to 0, which the triggers replace.
-- * ledger_policies: its key street_unit_id IS the street. street_id is added as a stored
--   generated column (= street_unit_id) rather than renaming the key: a rename would change
--   every reader and writer at once (the award path, the policy functions, the shell test of
--   the ledger's concurrency that inserts a policy by hand), for one row per street; the
--   generated column can never disagree with the key. Under Citus the table is distributed by
--   either (they are equal); new readers use street_id.
-- * audit_log.street_id: the street of the row's unit_id (0 when it has none); outbox: the
--   street of its person_id (0 when none). gp_audit / gp_outbox derive it in their one INSERT.
--
-- Indexes: none added. Every hot read that now also filters by street_id (the balance, the
-- statement) already finds its rows by a unique or leading key (accounts (kind, owner_id),
-- postings (account_id, id), point_lots (worker_id, expires_at)); street_id is a filter on
-- the rows those indexes return, which is what Citus needs to route the query to one shard.
-- Adding it to indexes of the hot write tables would add index entries to every posting
-- (issue 12). At the Citus step the unique keys gain street_id (docs/SCALING.md).
--
-- Backfill: one UPDATE per table, then SET NOT NULL; the append-only / immutable-account
-- triggers are held for the backfill only (as in 0017). Measured on the 2-vCPU dev VM: about
-- 70 us per ledger transaction and 40 us per posting, so a ledger of 1 M transactions and
-- 2 M postings takes some 3 minutes, during which ledger writes wait (migrate runs in one
-- transaction: plan it as the downtime of the upgrade, docs/OPERATIONS.md "Upgrading").

------------------------------------------------------------------------------------------
-- Fallback triggers: only for writers that do not pass street_id (seeds, fixtures, the
-- tests' hand-made rows); the SQL functions pass it, and the WHEN clause keeps the trigger
-- from even being called then.
------------------------------------------------------------------------------------------
CREATE FUNCTION street_id_of_account() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.kind IN ('worker', 'worker_pending') THEN
        SELECT p.street_id INTO NEW.street_id FROM public.persons p WHERE p.id = NEW.owner_id;
    ELSIF NEW.kind IN ('issuance', 'expiry', 'settlement') THEN
        NEW.street_id := NEW.owner_id;
    END IF;
    NEW.street_id := coalesce(NEW.street_id, public.street_of_unit(NEW.unit_id), 0);
    RETURN NEW;
END
$$;

-- A transaction's street when its writer did not give it: its worker's, else its unit's.
CREATE FUNCTION street_id_of_txn() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.street_id := NULL;
    IF NEW.refs ->> 'worker_id' ~ '^[0-9]{1,18}$' THEN
        SELECT p.street_id INTO NEW.street_id FROM public.persons p
         WHERE p.id = (NEW.refs ->> 'worker_id')::bigint;
    END IF;
    IF NEW.street_id IS NULL AND NEW.refs ->> 'unit_id' ~ '^[0-9]{1,18}$' THEN
        NEW.street_id := public.street_of_unit((NEW.refs ->> 'unit_id')::bigint);
    END IF;
    NEW.street_id := coalesce(NEW.street_id, 0);
    RETURN NEW;
END
$$;

CREATE FUNCTION street_id_of_posting() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    SELECT t.street_id INTO NEW.street_id FROM public.ledger_txns t WHERE t.id = NEW.txn_id;
    NEW.street_id := coalesce(NEW.street_id, 0);
    RETURN NEW;
END
$$;

CREATE FUNCTION street_id_of_audit_row() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.street_id := coalesce(public.street_of_unit(NEW.unit_id), 0);
    RETURN NEW;
END
$$;

CREATE FUNCTION street_id_of_outbox_row() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    SELECT p.street_id INTO NEW.street_id FROM public.persons p WHERE p.id = NEW.person_id;
    NEW.street_id := coalesce(NEW.street_id, 0);
    RETURN NEW;
END
$$;

------------------------------------------------------------------------------------------
-- Columns and backfill
------------------------------------------------------------------------------------------
ALTER TABLE accounts ADD COLUMN street_id bigint;
ALTER TABLE ledger_txns ADD COLUMN street_id bigint;
ALTER TABLE postings ADD COLUMN street_id bigint;
ALTER TABLE audit_log ADD COLUMN street_id bigint;
ALTER TABLE outbox ADD COLUMN street_id bigint;

ALTER TABLE accounts DISABLE TRIGGER accounts_guard;
ALTER TABLE ledger_txns DISABLE TRIGGER ledger_txns_append_only;
ALTER TABLE postings DISABLE TRIGGER postings_append_only;
ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only;

UPDATE accounts a SET street_id = coalesce(
    CASE WHEN a.kind IN ('issuance', 'expiry', 'settlement') THEN a.owner_id
         WHEN a.kind IN ('worker', 'worker_pending')
         THEN (SELECT p.street_id FROM persons p WHERE p.id = a.owner_id)
         WHEN a.kind IN ('budget', 'care') THEN street_of_unit(a.owner_id) END,
    street_of_unit(a.unit_id), 0);

-- The street of a transaction's non-zero accounts (one pass over the postings).
UPDATE ledger_txns t SET street_id = s.street
  FROM (SELECT x.id, coalesce(max(a.street_id) FILTER (WHERE a.street_id <> 0), 0) AS street
          FROM ledger_txns x
          LEFT JOIN postings p ON p.txn_id = x.id
          LEFT JOIN accounts a ON a.id = p.account_id
         GROUP BY x.id) s
 WHERE s.id = t.id;

UPDATE postings p SET street_id = t.street_id FROM ledger_txns t WHERE t.id = p.txn_id;
UPDATE postings SET street_id = 0 WHERE street_id IS NULL; -- none: the check reports orphans

UPDATE audit_log SET street_id = coalesce(street_of_unit(unit_id), 0);

UPDATE outbox o SET street_id = coalesce(
    (SELECT p.street_id FROM persons p WHERE p.id = o.person_id), 0);

ALTER TABLE accounts ENABLE TRIGGER accounts_guard;
ALTER TABLE ledger_txns ENABLE TRIGGER ledger_txns_append_only;
ALTER TABLE postings ENABLE TRIGGER postings_append_only;
ALTER TABLE audit_log ENABLE TRIGGER audit_log_append_only;

ALTER TABLE accounts ALTER COLUMN street_id SET NOT NULL;
ALTER TABLE ledger_txns ALTER COLUMN street_id SET NOT NULL;
ALTER TABLE postings ALTER COLUMN street_id SET NOT NULL;
ALTER TABLE audit_log ALTER COLUMN street_id SET NOT NULL;
ALTER TABLE outbox ALTER COLUMN street_id SET NOT NULL;

ALTER TABLE ledger_policies
    ADD COLUMN street_id bigint NOT NULL GENERATED ALWAYS AS (street_unit_id) STORED;

------------------------------------------------------------------------------------------
-- System accounts per street: owner 0 (legacy, street 0) or owner = street_id (the street's
-- unit). Every other kind keeps an owner > 0.
------------------------------------------------------------------------------------------
ALTER TABLE accounts DROP CONSTRAINT accounts_check;
ALTER TABLE accounts ADD CONSTRAINT accounts_system_owner CHECK (
    CASE WHEN kind IN ('issuance', 'expiry', 'settlement') THEN owner_id = street_id
         ELSE owner_id > 0 END);

-- An account's street never changes (like its kind and owner).
DROP TRIGGER accounts_guard ON accounts;
CREATE TRIGGER accounts_guard BEFORE UPDATE ON accounts FOR EACH ROW
    WHEN (NEW.id <> OLD.id OR NEW.kind <> OLD.kind OR NEW.owner_id <> OLD.owner_id
          OR NEW.unit_id IS DISTINCT FROM OLD.unit_id OR NEW.created_at <> OLD.created_at
          OR NEW.street_id <> OLD.street_id OR NEW.version <> OLD.version + 1)
    EXECUTE FUNCTION gp_accounts_immutable();

CREATE TRIGGER accounts_0street BEFORE INSERT ON accounts
    FOR EACH ROW WHEN (NEW.street_id IS NULL) EXECUTE FUNCTION street_id_of_account();
-- ledger_txns and postings default to the reference street 0 rather than NULL: a hand-made
-- row written with the triggers off (session_replication_role = replica: the bench data set,
-- the audit tests' tampering) still satisfies NOT NULL. With the triggers on, a row that
-- arrives with 0 gets the street derived (gp_ledger_post_core writes 0 itself only for a
-- transaction whose legs are all legacy system accounts, where the derivation gives 0 again).
ALTER TABLE ledger_txns ALTER COLUMN street_id SET DEFAULT 0;
ALTER TABLE postings ALTER COLUMN street_id SET DEFAULT 0;
CREATE TRIGGER ledger_txns_0street BEFORE INSERT ON ledger_txns
    FOR EACH ROW WHEN (NEW.street_id = 0) EXECUTE FUNCTION street_id_of_txn();
CREATE TRIGGER postings_0street BEFORE INSERT ON postings
    FOR EACH ROW WHEN (NEW.street_id = 0) EXECUTE FUNCTION street_id_of_posting();
CREATE TRIGGER audit_log_0street BEFORE INSERT ON audit_log
    FOR EACH ROW WHEN (NEW.street_id IS NULL) EXECUTE FUNCTION street_id_of_audit_row();
CREATE TRIGGER outbox_0street BEFORE INSERT ON outbox
    FOR EACH ROW WHEN (NEW.street_id IS NULL) EXECUTE FUNCTION street_id_of_outbox_row();
