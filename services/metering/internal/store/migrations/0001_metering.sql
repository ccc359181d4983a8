-- Metering's authoritative state. Every table here changes only inside the
-- fold's transaction, together: which events were folded (progress) and what
-- they did (balances, alerts to publish).

-- How far each (edge instance, partition) has been folded.
CREATE TABLE metering_progress (
    edge       text     NOT NULL,
    partition  int      NOT NULL,
    watermark  bigint   NOT NULL,
    above      bigint[] NOT NULL DEFAULT '{}',
    PRIMARY KEY (edge, partition)
);

-- One row per key: its folded limit states, alert marks and totals
-- (tollgate.events.v1.KeyBalance without the progress, which lives above).
CREATE TABLE metering_balances (
    key_id     text        PRIMARY KEY,
    account    text        NOT NULL,
    partition  int         NOT NULL,
    balance    bytea       NOT NULL,
    requests   bigint      NOT NULL,
    cost       bigint      NOT NULL,
    updated_at timestamptz NOT NULL
);
CREATE INDEX metering_balances_account ON metering_balances (account);

-- Alerts raised by a committed fold and not yet published (an outbox: a
-- crash between commit and publish loses none).
CREATE TABLE metering_alert_outbox (
    id       text  PRIMARY KEY,
    subject  text  NOT NULL,
    payload  bytea NOT NULL
);
