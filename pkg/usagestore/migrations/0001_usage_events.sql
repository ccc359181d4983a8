-- One row per usage event, written once by the sink. Ordered by account, key
-- and time, so that a report for one account (and key) reads a narrow range.
-- Money is Int64 nano-dollars; times are UTC seconds (DateTime64 does not
-- exist on ClickHouse 18.16). Partitions are days: a report's partial hours
-- at either end of its range read one day's part instead of the account's
-- whole month (the key puts the key before the time), and old days are
-- dropped whole with ALTER TABLE ... DROP PARTITION.
CREATE TABLE IF NOT EXISTS usage_events (
    account        String,
    key_id         String,
    occurred_at    DateTime('UTC'),
    edge_instance  String,
    -- The key's usage partition: edges number their events per partition,
    -- so (edge_instance, usage_partition, sequence) identifies an event.
    usage_partition UInt32,
    sequence       UInt64,
    service        String,
    model          String,
    endpoint       String,
    input_tokens   Int64,
    output_tokens  Int64,
    cost           Int64,
    request_bytes  Int64,
    response_bytes Int64,
    status         UInt16,
    latency_us     Int64,
    streamed       UInt8,
    estimated      UInt8
) ENGINE = MergeTree()
PARTITION BY toYYYYMMDD(occurred_at)
ORDER BY (account, key_id, occurred_at);
