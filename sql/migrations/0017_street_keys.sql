-- sql/migrations/0017_street_keys.sql
-- The path to sharding (issue 17, item 5; docs/SCALING.md): people and their role grants, the
-- tables of the work loop and of the merchants carry the street their row belongs to, so that PostgreSQL with Citus can
-- distribute them by street_id (co-located: a task, its claims, reports, check-ins and events
-- on one node; a merchant, its keys, staff, offers, vouchers, charges, refunds, settlements
-- and events on one node) and every query of a request can name its shard.
--
-- A BEFORE INSERT trigger fills street_id from the row's parent (unit -> street, task ->
-- street, assignment -> street, merchant -> street) when the insert does not give it, so every writer -- the SQL
-- functions, the seeds, the tests' fixtures -- keeps working unchanged; functions that pass
-- it themselves skip the lookup. Existing rows are backfilled here (the append-only triggers
-- are held for the backfill only), then the column is NOT NULL.
-- tests/api/test_sharding.py lists every table that does not carry street_id and is neither
-- global nor on its list of tables still to do.

-- The street of a unit: the root of its path. Not in schema gp (migrate re-creates that one;
-- triggers must not depend on it).
CREATE FUNCTION street_of_unit(p_unit bigint) RETURNS bigint LANGUAGE sql STABLE AS $$
    SELECT ltree2text(subpath(path, 0, 1))::bigint FROM public.org_units WHERE id = p_unit
$$;

CREATE FUNCTION street_id_from_unit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.street_id IS NULL THEN
        NEW.street_id := public.street_of_unit(NEW.unit_id);
    END IF;
    RETURN NEW;
END
$$;

CREATE FUNCTION street_id_from_task() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.street_id IS NULL THEN
        SELECT t.street_id INTO NEW.street_id FROM public.tasks t WHERE t.id = NEW.task_id;
    END IF;
    RETURN NEW;
END
$$;

CREATE FUNCTION street_id_from_assignment() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.street_id IS NULL THEN
        SELECT a.street_id INTO NEW.street_id FROM public.assignments a
         WHERE a.id = NEW.assignment_id;
    END IF;
    RETURN NEW;
END
$$;

CREATE FUNCTION street_id_from_merchant() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.street_id IS NULL THEN
        SELECT m.street_id INTO NEW.street_id FROM public.merchants m
         WHERE m.id = NEW.merchant_id;
    END IF;
    RETURN NEW;
END
$$;

ALTER TABLE persons ADD COLUMN street_id bigint;      -- the street of the home unit
ALTER TABLE role_grants ADD COLUMN street_id bigint;  -- the street of the granted unit
ALTER TABLE tasks ADD COLUMN street_id bigint;
ALTER TABLE assignments ADD COLUMN street_id bigint;
ALTER TABLE reports ADD COLUMN street_id bigint;
ALTER TABLE checkins ADD COLUMN street_id bigint;
ALTER TABLE task_events ADD COLUMN street_id bigint;
ALTER TABLE assignment_events ADD COLUMN street_id bigint;
ALTER TABLE merchant_keys ADD COLUMN street_id bigint;
ALTER TABLE merchant_staff ADD COLUMN street_id bigint;
ALTER TABLE offers ADD COLUMN street_id bigint;
ALTER TABLE vouchers ADD COLUMN street_id bigint;
ALTER TABLE charges ADD COLUMN street_id bigint;
ALTER TABLE refunds ADD COLUMN street_id bigint;
ALTER TABLE settlements ADD COLUMN street_id bigint;
ALTER TABLE merchant_events ADD COLUMN street_id bigint;

ALTER TABLE reports DISABLE TRIGGER reports_append_only;
ALTER TABLE checkins DISABLE TRIGGER checkins_append_only;
ALTER TABLE task_events DISABLE TRIGGER task_events_append_only;
ALTER TABLE assignment_events DISABLE TRIGGER assignment_events_append_only;
ALTER TABLE refunds DISABLE TRIGGER refunds_append_only;
ALTER TABLE settlements DISABLE TRIGGER settlements_append_only;

UPDATE persons SET street_id = street_of_unit(unit_id);
UPDATE role_grants SET street_id = street_of_unit(unit_id);
UPDATE tasks SET street_id = street_of_unit(unit_id);
UPDATE assignments a SET street_id = t.street_id FROM tasks t WHERE t.id = a.task_id;
UPDATE reports r SET street_id = t.street_id FROM tasks t WHERE t.id = r.task_id;
UPDATE checkins c SET street_id = a.street_id FROM assignments a WHERE a.id = c.assignment_id;
UPDATE task_events e SET street_id = t.street_id FROM tasks t WHERE t.id = e.task_id;
UPDATE assignment_events e SET street_id = t.street_id FROM tasks t WHERE t.id = e.task_id;
UPDATE merchant_keys x SET street_id = m.street_id FROM merchants m WHERE m.id = x.merchant_id;
UPDATE merchant_staff x SET street_id = m.street_id FROM merchants m WHERE m.id = x.merchant_id;
UPDATE offers x SET street_id = m.street_id FROM merchants m WHERE m.id = x.merchant_id;
UPDATE vouchers x SET street_id = m.street_id FROM merchants m WHERE m.id = x.merchant_id;
UPDATE charges x SET street_id = m.street_id FROM merchants m WHERE m.id = x.merchant_id;
UPDATE refunds x SET street_id = m.street_id FROM merchants m WHERE m.id = x.merchant_id;
UPDATE settlements x SET street_id = m.street_id FROM merchants m WHERE m.id = x.merchant_id;
UPDATE merchant_events x SET street_id = m.street_id FROM merchants m WHERE m.id = x.merchant_id;

ALTER TABLE reports ENABLE TRIGGER reports_append_only;
ALTER TABLE checkins ENABLE TRIGGER checkins_append_only;
ALTER TABLE task_events ENABLE TRIGGER task_events_append_only;
ALTER TABLE assignment_events ENABLE TRIGGER assignment_events_append_only;
ALTER TABLE refunds ENABLE TRIGGER refunds_append_only;
ALTER TABLE settlements ENABLE TRIGGER settlements_append_only;

ALTER TABLE persons ALTER COLUMN street_id SET NOT NULL;
ALTER TABLE role_grants ALTER COLUMN street_id SET NOT NULL;
ALTER TABLE tasks ALTER COLUMN street_id SET NOT NULL;
ALTER TABLE assignments ALTER COLUMN street_id SET NOT NULL;
ALTER TABLE reports ALTER COLUMN street_id SET NOT NULL;
ALTER TABLE checkins ALTER COLUMN street_id SET NOT NULL;
ALTER TABLE task_events ALTER COLUMN street_id SET NOT NULL;
ALTER TABLE assignment_events ALTER COLUMN street_id SET NOT NULL;
ALTER TABLE merchant_keys ALTER COLUMN street_id SET NOT NULL;
ALTER TABLE merchant_staff ALTER COLUMN street_id SET NOT NULL;
ALTER TABLE offers ALTER COLUMN street_id SET NOT NULL;
ALTER TABLE vouchers ALTER COLUMN street_id SET NOT NULL;
ALTER TABLE charges ALTER COLUMN street_id SET NOT NULL;
ALTER TABLE refunds ALTER COLUMN street_id SET NOT NULL;
ALTER TABLE settlements ALTER COLUMN street_id SET NOT NULL;
ALTER TABLE merchant_events ALTER COLUMN street_id SET NOT NULL;

-- Named *_0street so that they run before any other BEFORE INSERT trigger of the table
-- (PostgreSQL fires them in name order): a later trigger may read street_id.
-- A person's home unit and a grant's unit never change (no function updates them), so the
-- street is set once, on insert.
CREATE TRIGGER persons_0street BEFORE INSERT ON persons
    FOR EACH ROW EXECUTE FUNCTION street_id_from_unit();
CREATE TRIGGER role_grants_0street BEFORE INSERT ON role_grants
    FOR EACH ROW EXECUTE FUNCTION street_id_from_unit();
CREATE TRIGGER tasks_0street BEFORE INSERT ON tasks
    FOR EACH ROW EXECUTE FUNCTION street_id_from_unit();
CREATE TRIGGER assignments_0street BEFORE INSERT ON assignments
    FOR EACH ROW EXECUTE FUNCTION street_id_from_task();
CREATE TRIGGER reports_0street BEFORE INSERT ON reports
    FOR EACH ROW EXECUTE FUNCTION street_id_from_task();
CREATE TRIGGER checkins_0street BEFORE INSERT ON checkins
    FOR EACH ROW EXECUTE FUNCTION street_id_from_assignment();
CREATE TRIGGER task_events_0street BEFORE INSERT ON task_events
    FOR EACH ROW EXECUTE FUNCTION street_id_from_task();
CREATE TRIGGER assignment_events_0street BEFORE INSERT ON assignment_events
    FOR EACH ROW EXECUTE FUNCTION street_id_from_task();
CREATE TRIGGER merchant_keys_0street BEFORE INSERT ON merchant_keys
    FOR EACH ROW EXECUTE FUNCTION street_id_from_merchant();
CREATE TRIGGER merchant_staff_0street BEFORE INSERT ON merchant_staff
    FOR EACH ROW EXECUTE FUNCTION street_id_from_merchant();
CREATE TRIGGER offers_0street BEFORE INSERT ON offers
    FOR EACH ROW EXECUTE FUNCTION street_id_from_merchant();
CREATE TRIGGER vouchers_0street BEFORE INSERT ON vouchers
    FOR EACH ROW EXECUTE FUNCTION street_id_from_merchant();
CREATE TRIGGER charges_0street BEFORE INSERT ON charges
    FOR EACH ROW EXECUTE FUNCTION street_id_from_merchant();
CREATE TRIGGER refunds_0street BEFORE INSERT ON refunds
    FOR EACH ROW EXECUTE FUNCTION street_id_from_merchant();
CREATE TRIGGER settlements_0street BEFORE INSERT ON settlements
    FOR EACH ROW EXECUTE FUNCTION street_id_from_merchant();
CREATE TRIGGER merchant_events_0street BEFORE INSERT ON merchant_events
    FOR EACH ROW EXECUTE FUNCTION street_id_from_merchant();

-- A street's tasks (its boards and review queues start here); the distribution column leads.
CREATE INDEX tasks_street ON tasks (street_id, id);
