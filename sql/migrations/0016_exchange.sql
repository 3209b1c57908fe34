-- 0016_exchange.sql -- points exchange with partner schemes (积分互通; docs/EXCHANGE.md).
--
-- A street registers partner schemes; a worker links their account to their account in the
-- partner scheme by a one-time link code; transfers move points two-phase, one transfer id
-- chosen by the sender, exactly once on both sides. Every movement is an ordinary ledger
-- transaction (kind 'exchange') between the worker, a per-transfer hold ('xhold') and the
-- partner's clearing account ('clearing'), whose balance is our net position with the
-- partner: positive = we sent more than we received. A clearing account is the one account
-- besides issuance that may go negative.

ALTER TABLE accounts DROP CONSTRAINT accounts_kind_check;
ALTER TABLE accounts ADD CONSTRAINT accounts_kind_check CHECK (kind IN ('issuance', 'expiry',
    'settlement', 'budget', 'reservation', 'worker', 'worker_pending', 'merchant', 'hold',
    'care', 'clearing', 'xhold'));
ALTER TABLE accounts DROP CONSTRAINT accounts_balance_nonnegative;
ALTER TABLE accounts ADD CONSTRAINT accounts_balance_nonnegative
    CHECK (kind IN ('issuance', 'clearing') OR balance >= 0);

ALTER TABLE ledger_txns DROP CONSTRAINT ledger_txns_kind_check;
ALTER TABLE ledger_txns ADD CONSTRAINT ledger_txns_kind_check CHECK (kind IN ('issue', 'grant',
    'reserve', 'award', 'release', 'hold', 'capture', 'charge', 'refund', 'expire', 'adjust',
    'settle', 'vest', 'void', 'exchange'));

CREATE TABLE exchange_partners (
    id                  bigserial PRIMARY KEY,
    street_id           bigint NOT NULL REFERENCES org_units (id),
    code                text NOT NULL CHECK (code ~ '^[a-z0-9][a-z0-9_-]{0,31}$'),
    name                text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    base_url            text NOT NULL CHECK (length(base_url) BETWEEN 9 AND 300),
    -- we sign our requests to the partner with out_key; the partner signs its requests to us
    -- with in_key; each reply is signed with the key of its request. Secrets sealed
    -- (merchant_crypto.h, aad = the key id).
    out_key_id          text NOT NULL UNIQUE CHECK (out_key_id ~ '^xp_[0-9a-f]{16}$'),
    out_secret_ct       text NOT NULL,
    in_key_id           text NOT NULL UNIQUE CHECK (in_key_id ~ '^xp_[0-9a-f]{16}$'),
    in_secret_ct        text NOT NULL,
    -- rate_num of our points are worth rate_den of the partner's
    rate_num            int NOT NULL CHECK (rate_num BETWEEN 1 AND 1000000),
    rate_den            int NOT NULL CHECK (rate_den BETWEEN 1 AND 1000000),
    worker_daily_limit  bigint NOT NULL CHECK (worker_daily_limit > 0),  -- our points
    partner_daily_limit bigint NOT NULL CHECK (partner_daily_limit > 0), -- our points
    enabled             boolean NOT NULL DEFAULT true,
    -- the reconciliation timer: the next statement day to reconcile, and its lease
    recon_next_day      date NOT NULL DEFAULT (now() AT TIME ZONE 'UTC')::date,
    recon_lease_until   timestamptz,
    created_by          bigint NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    UNIQUE (street_id, code),
    CHECK (out_key_id <> in_key_id)
);

CREATE TABLE exchange_link_codes (
    id          bigserial PRIMARY KEY,
    street_id   bigint NOT NULL,
    partner_id  bigint NOT NULL REFERENCES exchange_partners (id),
    worker_id   bigint NOT NULL REFERENCES persons (id),
    code_hash   text NOT NULL UNIQUE,  -- hex SHA-256 of the code; the code is shown once
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz
);

CREATE TABLE exchange_links (
    id          bigserial PRIMARY KEY,
    street_id   bigint NOT NULL,
    partner_id  bigint NOT NULL REFERENCES exchange_partners (id),
    worker_id   bigint NOT NULL REFERENCES persons (id),
    local_ref   text NOT NULL UNIQUE CHECK (local_ref ~ '^xa_[0-9a-f]{24}$'), -- our account ref
    remote_ref  text NOT NULL CHECK (length(remote_ref) BETWEEN 1 AND 64),    -- theirs
    created_at  timestamptz NOT NULL DEFAULT now(),
    unlinked_at timestamptz
);
CREATE UNIQUE INDEX exchange_links_worker ON exchange_links (partner_id, worker_id)
    WHERE unlinked_at IS NULL;
CREATE UNIQUE INDEX exchange_links_remote ON exchange_links (partner_id, remote_ref)
    WHERE unlinked_at IS NULL;

-- One row per transfer and side. direction 'out': we are the sender (state pending ->
-- completed | rejected, driven by the durable timer); 'in': we are the receiver (state
-- accepted | rejected, decided once, answered the same forever). amount is in our points,
-- remote_amount in the partner's. sent_at is the sender's clock (the statement day).
CREATE TABLE exchange_transfers (
    id              bigserial PRIMARY KEY,
    street_id       bigint NOT NULL,
    partner_id      bigint NOT NULL REFERENCES exchange_partners (id),
    transfer_id     text NOT NULL CHECK (transfer_id ~ '^[A-Za-z0-9_-]{8,64}$'),
    direction       text NOT NULL CHECK (direction IN ('out', 'in')),
    link_id         bigint REFERENCES exchange_links (id),
    worker_id       bigint,
    from_account    text NOT NULL,
    to_account      text NOT NULL,
    amount          bigint NOT NULL CHECK (amount > 0),
    remote_amount   bigint NOT NULL CHECK (remote_amount > 0),
    state           text NOT NULL CHECK (state IN ('pending', 'completed', 'accepted', 'rejected')),
    reason          text,
    sent_at         timestamptz NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    decided_at      timestamptz,
    -- the sender's timer (direction 'out', state 'pending')
    attempts        int NOT NULL DEFAULT 0,
    next_attempt_at timestamptz,
    deadline        timestamptz,
    last_error      text,
    hold_txn_id     bigint,
    final_txn_id    bigint,
    spend           jsonb,  -- out: the lots the hold spent (given back to them on rejection)
    UNIQUE (partner_id, direction, transfer_id),
    CHECK (direction = 'out' AND state IN ('pending', 'completed', 'rejected')
           OR direction = 'in' AND state IN ('accepted', 'rejected')),
    CHECK ((state = 'pending') = (next_attempt_at IS NOT NULL))
);
CREATE INDEX exchange_transfers_due ON exchange_transfers (next_attempt_at)
    WHERE state = 'pending';
CREATE INDEX exchange_transfers_day ON exchange_transfers (partner_id, sent_at);
CREATE INDEX exchange_transfers_worker ON exchange_transfers (worker_id, id);

-- Reconciliation of one partner and one statement day (UTC), and its mismatches.
CREATE TABLE exchange_reconciliations (
    id          bigserial PRIMARY KEY,
    street_id   bigint NOT NULL,
    partner_id  bigint NOT NULL REFERENCES exchange_partners (id),
    day         date NOT NULL,
    checked_at  timestamptz NOT NULL DEFAULT now(),
    ours        int NOT NULL,
    theirs      int NOT NULL,
    mismatches  int NOT NULL,
    error       text,
    UNIQUE (partner_id, day)
);
CREATE TABLE exchange_mismatches (
    id          bigserial PRIMARY KEY,
    street_id   bigint NOT NULL,
    partner_id  bigint NOT NULL REFERENCES exchange_partners (id),
    day         date NOT NULL,
    transfer_id text NOT NULL,
    kind        text NOT NULL CHECK (kind IN ('missing_here', 'missing_there', 'amount', 'state')),
    ours        jsonb,
    theirs      jsonb,
    found_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX exchange_mismatches_partner ON exchange_mismatches (partner_id, day);

-- Settlement of the net position per period (like merchant settlement): the clearing
-- balance change over [period_start, period_end).
CREATE TABLE exchange_settlements (
    id           bigserial PRIMARY KEY,
    street_id    bigint NOT NULL,
    partner_id   bigint NOT NULL REFERENCES exchange_partners (id),
    period_start timestamptz NOT NULL,
    period_end   timestamptz NOT NULL CHECK (period_end > period_start),
    sent         bigint NOT NULL,
    received     bigint NOT NULL,
    net          bigint NOT NULL,
    created_by   bigint NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (partner_id, period_start)
);

GRANT SELECT, INSERT, UPDATE ON exchange_partners, exchange_link_codes, exchange_links,
    exchange_transfers, exchange_reconciliations, exchange_settlements TO gp_app;
GRANT SELECT, INSERT, DELETE ON exchange_mismatches TO gp_app;
GRANT USAGE ON SEQUENCE exchange_partners_id_seq, exchange_link_codes_id_seq,
    exchange_links_id_seq, exchange_transfers_id_seq, exchange_reconciliations_id_seq,
    exchange_mismatches_id_seq, exchange_settlements_id_seq TO gp_app;
