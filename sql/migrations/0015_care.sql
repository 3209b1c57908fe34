-- sql/migrations/0015_care.sql
-- Care visits from the red / yellow / blue lists (issue 15, docs/CARE.md): residents who need
-- care, the street's colour policy, the schedule of due visits, the visits themselves and the
-- follow-ups they raise for grid staff. The functions are in sql/functions/80_care.sql.
--
-- Personal data (name, phone, address, ID number, health notes, visit notes) never reaches
-- this database in clear: the server seals each value with AES-256-GCM before the statement
-- ("v1.<hex>", server/care_crypto.c) and opens it on the way out. Phone and ID number are also
-- stored as keyed hashes (HMAC-SHA256, hex) so that staff can find a resident by them.

-- The street's policy per colour: how often a resident of that colour is visited, how long a
-- due visit may wait before it is overdue, and what a completed visit earns.
CREATE TABLE care_policies (
    street_id    bigint NOT NULL REFERENCES org_units (id),
    colour       text NOT NULL CHECK (colour IN ('red', 'yellow', 'blue')),
    every        interval NOT NULL CHECK (every >= interval '1 second'
                                          AND every <= interval '366 days'),
    grace        interval NOT NULL CHECK (grace >= interval '0'
                                          AND grace <= interval '366 days'),
    points       bigint NOT NULL CHECK (points BETWEEN 0 AND 100000),
    geofence_m   int NOT NULL DEFAULT 200 CHECK (geofence_m BETWEEN 10 AND 100000),
    geofence_enforced boolean NOT NULL DEFAULT false,  -- refuse (409) rather than flag
    updated_by   bigint REFERENCES persons (id),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (street_id, colour)
);

CREATE TABLE care_residents (
    id              bigserial PRIMARY KEY,
    street_id       bigint NOT NULL REFERENCES org_units (id),
    unit_id         bigint NOT NULL REFERENCES org_units (id),     -- a micro-grid
    colour          text NOT NULL CHECK (colour IN ('red', 'yellow', 'blue')),
    categories      text[] NOT NULL DEFAULT '{}' CHECK (cardinality(categories) <= 8),
    worker_id       bigint NOT NULL REFERENCES persons (id),       -- responsible worker
    backup_id       bigint REFERENCES persons (id),
    -- sealed ("v1.<hex>"); NULL once purged after removal (retention)
    name_sealed     text,
    phone_sealed    text,
    address_sealed  text,
    id_number_sealed text,
    health_sealed   text,
    phone_hash      text CHECK (phone_hash ~ '^[0-9a-f]{64}$'),
    id_hash         text CHECK (id_hash ~ '^[0-9a-f]{64}$'),
    -- the check-in point of the home (building level), for the geofence
    lat             double precision CHECK (lat BETWEEN -90 AND 90),
    lng             double precision CHECK (lng BETWEEN -180 AND 180),
    status          text NOT NULL DEFAULT 'active'
                        CHECK (status IN ('active', 'paused', 'removed')),
    status_reason   text CHECK (length(status_reason) <= 500),
    entered_at      timestamptz NOT NULL DEFAULT now(),   -- list entry: the first due is from it
    last_visit_at   timestamptz,                          -- last completed visit (made_at)
    removed_at      timestamptz,
    purged_at       timestamptz,
    created_by      bigint REFERENCES persons (id),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CHECK ((status = 'removed') = (removed_at IS NOT NULL)),
    CHECK (purged_at IS NULL OR (name_sealed IS NULL AND phone_sealed IS NULL
                                 AND address_sealed IS NULL AND id_number_sealed IS NULL
                                 AND health_sealed IS NULL AND phone_hash IS NULL
                                 AND id_hash IS NULL)),
    CHECK (backup_id IS DISTINCT FROM worker_id)
);
CREATE INDEX care_residents_unit ON care_residents (unit_id, id);
CREATE INDEX care_residents_street ON care_residents (street_id, status);
CREATE INDEX care_residents_worker ON care_residents (worker_id) WHERE status <> 'removed';
CREATE INDEX care_residents_backup ON care_residents (backup_id) WHERE status <> 'removed';
CREATE INDEX care_residents_phone ON care_residents (phone_hash) WHERE phone_hash IS NOT NULL;
CREATE INDEX care_residents_idno ON care_residents (id_hash) WHERE id_hash IS NOT NULL;
CREATE INDEX care_residents_purge ON care_residents (removed_at)
    WHERE status = 'removed' AND purged_at IS NULL;

-- The schedule: one row per visit that falls due. At most one is open per resident; a
-- completed visit closes it ('done') and opens the next, a colour change, pause or removal
-- cancels it ('cancelled', and a colour change or resume opens the replacement).
CREATE TABLE care_dues (
    id            bigserial PRIMARY KEY,
    street_id     bigint NOT NULL REFERENCES org_units (id),
    resident_id   bigint NOT NULL REFERENCES care_residents (id),
    colour        text NOT NULL CHECK (colour IN ('red', 'yellow', 'blue')),
    due_at        timestamptz NOT NULL,
    grace_until   timestamptz NOT NULL CHECK (grace_until >= due_at),
    state         text NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'done', 'cancelled')),
    reason        text NOT NULL CHECK (reason IN ('entry', 'visit', 'colour', 'resume')),
    escalated_at  timestamptz,          -- set once by the sweep when the grace ran out
    visit_id      bigint,               -- the visit that completed it
    done_at       timestamptz,          -- made_at of that visit
    closed_at     timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now(),
    CHECK ((state = 'open') = (closed_at IS NULL)),
    CHECK ((state = 'done') = (visit_id IS NOT NULL AND done_at IS NOT NULL))
);
CREATE UNIQUE INDEX care_dues_one_open ON care_dues (resident_id) WHERE state = 'open';
CREATE INDEX care_dues_resident ON care_dues (resident_id, id);
CREATE INDEX care_dues_escalate ON care_dues (grace_until)
    WHERE state = 'open' AND escalated_at IS NULL;
CREATE INDEX care_dues_street_due ON care_dues (street_id, due_at);

CREATE TABLE care_visits (
    id               bigserial PRIMARY KEY,
    street_id        bigint NOT NULL REFERENCES org_units (id),
    resident_id      bigint NOT NULL REFERENCES care_residents (id),
    due_id           bigint REFERENCES care_dues (id),  -- NULL: an extra visit, nothing was due
    worker_id        bigint NOT NULL REFERENCES persons (id),
    client_visit_id  text NOT NULL CHECK (client_visit_id ~ '^[A-Za-z0-9_.:-]{1,64}$'),
    made_at          timestamptz NOT NULL,               -- client clock
    received_at      timestamptz NOT NULL DEFAULT now(),
    lat              double precision,
    lng              double precision,
    distance_m       double precision,
    outcome          text NOT NULL CHECK (outcome IN ('well', 'needs_help', 'not_home', 'moved')),
    help_kind        text CHECK (help_kind IN ('health', 'meals', 'repairs', 'mood', 'other')),
    notes_sealed     text,                               -- sealed like the resident's fields
    photos           text[] NOT NULL DEFAULT '{}',       -- evidence sha256 (70_evidence.sql)
    photo_consent    boolean NOT NULL DEFAULT false,
    flags            text[] NOT NULL DEFAULT '{}',
    points           bigint NOT NULL DEFAULT 0,
    award_txn        bigint,
    request_hash     text NOT NULL,
    response         jsonb NOT NULL,
    CHECK ((outcome = 'needs_help') = (help_kind IS NOT NULL)),
    CHECK (cardinality(photos) = 0 OR photo_consent),
    UNIQUE (worker_id, client_visit_id)
);
CREATE INDEX care_visits_resident ON care_visits (resident_id, made_at DESC);
CREATE INDEX care_visits_street ON care_visits (street_id, made_at);
CREATE UNIQUE INDEX care_visits_due_once ON care_visits (due_id) WHERE due_id IS NOT NULL;

-- What grid staff must act on (网格吹哨): a visit that found the resident needing help or
-- gone, or a due visit past its grace period. Tracked until closed.
CREATE TABLE care_followups (
    id           bigserial PRIMARY KEY,
    street_id    bigint NOT NULL REFERENCES org_units (id),
    unit_id      bigint NOT NULL REFERENCES org_units (id),   -- the resident's micro-grid
    resident_id  bigint NOT NULL REFERENCES care_residents (id),
    kind         text NOT NULL CHECK (kind IN ('needs_help', 'overdue', 'moved')),
    help_kind    text CHECK (help_kind IN ('health', 'meals', 'repairs', 'mood', 'other')),
    visit_id     bigint REFERENCES care_visits (id),
    due_id       bigint REFERENCES care_dues (id),
    state        text NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'closed')),
    opened_at    timestamptz NOT NULL DEFAULT now(),
    closed_at    timestamptz,
    closed_by    bigint REFERENCES persons (id),
    close_note   text CHECK (length(close_note) <= 500),
    CHECK ((state = 'closed') = (closed_at IS NOT NULL)),
    CHECK ((kind = 'overdue') = (due_id IS NOT NULL AND visit_id IS NULL))
);
-- An overdue visit escalates exactly once, a visit raises at most one follow-up.
CREATE UNIQUE INDEX care_followups_due_once ON care_followups (due_id) WHERE kind = 'overdue';
CREATE UNIQUE INDEX care_followups_visit_once ON care_followups (visit_id)
    WHERE visit_id IS NOT NULL;
CREATE INDEX care_followups_unit ON care_followups (unit_id, state, id);

------------------------------------------------------------------------------------------
-- The ledger: a grid's care budget is an account of kind 'care' (owner: the grid), filled
-- from the grid's budget ('reserve') and paying visits ('award', refs.care_visit_id, at most
-- once per visit).
------------------------------------------------------------------------------------------
DO $$
DECLARE
    c text;
BEGIN
    SELECT conname INTO c FROM pg_constraint
     WHERE conrelid = 'accounts'::regclass AND contype = 'c'
       AND pg_get_constraintdef(oid) LIKE '%''reservation''%''worker_pending''%';
    EXECUTE format('ALTER TABLE accounts DROP CONSTRAINT %I', c);
    SELECT conname INTO c FROM pg_constraint
     WHERE conrelid = 'ledger_txns'::regclass AND contype = 'c'
       AND pg_get_constraintdef(oid) LIKE '%assignment_id%';
    EXECUTE format('ALTER TABLE ledger_txns DROP CONSTRAINT %I', c);
END
$$;
ALTER TABLE accounts ADD CONSTRAINT accounts_kind_check
    CHECK (kind IN ('issuance', 'expiry', 'settlement', 'budget', 'reservation', 'worker',
                    'worker_pending', 'merchant', 'hold', 'care'));
ALTER TABLE ledger_txns ADD CONSTRAINT ledger_txns_award_refs
    CHECK (kind <> 'award' OR refs ? 'assignment_id' OR refs ? 'care_visit_id');
CREATE UNIQUE INDEX ledger_txns_care_award_once ON ledger_txns ((refs ->> 'care_visit_id'))
    WHERE kind = 'award' AND refs ? 'care_visit_id';

GRANT SELECT, INSERT, UPDATE ON care_policies, care_residents, care_dues, care_visits,
    care_followups TO gp_app;
GRANT USAGE ON SEQUENCE care_residents_id_seq, care_dues_id_seq, care_visits_id_seq,
    care_followups_id_seq TO gp_app;
