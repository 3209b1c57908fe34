-- sql/migrations/0014_evidence.sql
-- Evidence photos (issue 13, item 3; docs/OPERATIONS.md "Evidence"): one row per photo,
-- addressed by the SHA-256 of its bytes, which live in the evidence store (server/
-- evidence_store.c; by default files under evidence.dir). The row says what the bytes are,
-- who uploaded them, until when they are kept and whether they were deleted; the people who
-- uploaded the same bytes are in evidence_uploaders. The functions are in
-- sql/functions/70_evidence.sql.

CREATE TABLE evidence (
    sha256        text PRIMARY KEY CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    size          bigint NOT NULL CHECK (size > 0),
    content_type  text NOT NULL CHECK (content_type IN ('image/jpeg', 'image/png', 'image/webp')),
    uploaded_by   bigint NOT NULL REFERENCES persons (id),   -- the first uploader
    created_at    timestamptz NOT NULL DEFAULT now(),        -- database clock
    retention     interval NOT NULL,                         -- evidence.retention at upload
    expires_at    timestamptz NOT NULL,                      -- later when a flagged or rejected
                                                             -- report refers to it
    -- stored: the bytes are in the store; deleting: a sweep claimed it until lease_until and
    -- is removing the bytes; deleted: gone (an upload of the same bytes stores it again).
    state         text NOT NULL DEFAULT 'stored' CHECK (state IN ('stored', 'deleting', 'deleted')),
    lease_until   timestamptz,
    deleted_at    timestamptz,
    CHECK ((state = 'deleting') = (lease_until IS NOT NULL)),
    CHECK ((state = 'deleted') = (deleted_at IS NOT NULL))
);
-- The sweep's scan: stored rows by expiry, and leases that ran out.
CREATE INDEX evidence_due ON evidence (expires_at) WHERE state = 'stored';
CREATE INDEX evidence_leased ON evidence (lease_until) WHERE state = 'deleting';

CREATE TABLE evidence_uploaders (
    sha256       text NOT NULL REFERENCES evidence (sha256),
    person_id    bigint NOT NULL REFERENCES persons (id),
    uploaded_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (sha256, person_id)
);

-- Which reports refer to a photo (reports.evidence holds [{url, sha256}]): the read check and
-- the retention of flagged or rejected reports look it up by containment.
CREATE INDEX reports_evidence ON reports USING gin (evidence jsonb_path_ops);

GRANT SELECT, INSERT, UPDATE ON evidence, evidence_uploaders TO gp_app;
