-- sql/migrations/0013_wechat.sql
-- WeChat login (issue 13, item 2; docs/OPERATIONS.md "WeChat set-up"): which WeChat user
-- (an openid, per app id) is which person, the one-time invite codes staff issue so that a
-- person can bind their WeChat, and the short-lived bind tickets an unbound openid gets at
-- login. Invite codes and bind tickets are random secrets made by the server; only their
-- SHA-256 is stored. The functions are in sql/functions/25_wechat.sql.

CREATE TABLE wechat_bindings (
    id            bigserial PRIMARY KEY,
    person_id     bigint NOT NULL REFERENCES persons (id),
    app_id        text NOT NULL CHECK (app_id ~ '^[A-Za-z0-9_-]{1,64}$'),
    openid        text NOT NULL CHECK (openid ~ '^[A-Za-z0-9_-]{1,128}$'),
    unionid       text CHECK (unionid ~ '^[A-Za-z0-9_-]{1,128}$'),
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_login_at timestamptz,
    UNIQUE (app_id, openid),
    UNIQUE (person_id, app_id) -- one WeChat account per person and app; a new bind replaces it
);
CREATE INDEX wechat_bindings_unionid ON wechat_bindings (unionid) WHERE unionid IS NOT NULL;

CREATE TABLE wechat_invites (
    id          bigserial PRIMARY KEY,
    person_id   bigint NOT NULL REFERENCES persons (id),
    code_hash   bytea NOT NULL UNIQUE CHECK (length(code_hash) = 32),
    issued_by   bigint NOT NULL REFERENCES persons (id),
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL CHECK (expires_at > created_at),
    used_at     timestamptz,
    revoked_at  timestamptz -- a newer invite for the same person replaced it
);
CREATE INDEX wechat_invites_open ON wechat_invites (person_id)
    WHERE used_at IS NULL AND revoked_at IS NULL;

CREATE TABLE wechat_bind_tickets (
    id          bigserial PRIMARY KEY,
    ticket_hash bytea NOT NULL UNIQUE CHECK (length(ticket_hash) = 32),
    app_id      text NOT NULL,
    openid      text NOT NULL,
    unionid     text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL CHECK (expires_at > created_at),
    attempts    int NOT NULL DEFAULT 0 CHECK (attempts >= 0), -- binds tried with it
    used_at     timestamptz
);
CREATE INDEX wechat_bind_tickets_expires ON wechat_bind_tickets (expires_at);

GRANT SELECT, INSERT, UPDATE, DELETE ON wechat_bindings, wechat_bind_tickets TO gp_app;
GRANT SELECT, INSERT, UPDATE ON wechat_invites TO gp_app;
GRANT USAGE ON SEQUENCE wechat_bindings_id_seq, wechat_invites_id_seq,
    wechat_bind_tickets_id_seq TO gp_app;
