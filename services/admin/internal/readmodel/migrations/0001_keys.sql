-- The admin read model of keys, projected from the KEYS stream. It can be
-- dropped at any time: the projector rebuilds it from the stream.
CREATE TABLE keys (
    account      text        NOT NULL,
    id           text        NOT NULL,
    name         text        NOT NULL,
    status       text        NOT NULL, -- 'active' or 'revoked'; 'expired' is derived from expires_at
    permissions  text[]      NOT NULL, -- effective: WRITE implies READ
    expires_at   timestamptz,
    created_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL,
    revision     bigint      NOT NULL, -- KEYS stream sequence of the key's last event
    state        bytea       NOT NULL, -- tollgate.events.v1.Key
    PRIMARY KEY (account, id)
);

-- Hashes of the secrets that currently open a key (the current one and those
-- in a rotation's grace period). Never the secrets themselves.
CREATE TABLE key_secrets (
    hash       bytea       PRIMARY KEY,
    account    text        NOT NULL,
    id         text        NOT NULL,
    expires_at timestamptz
);
CREATE INDEX key_secrets_key ON key_secrets (account, id);

-- How far each projector has read its stream.
CREATE TABLE projector_positions (
    name       text   PRIMARY KEY,
    stream_seq bigint NOT NULL
);
