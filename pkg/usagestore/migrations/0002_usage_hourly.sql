-- The hourly rollup per account, key, model and service, kept by the
-- database: every block inserted into usage_events is summed into it by the
-- materialized view. SummingMergeTree adds rows up only when parts merge,
-- which happens lazily, so readers always aggregate with sum() ... GROUP BY.
-- The sums are signed so that the sink can insert a correcting row (see
-- Writer.Repair) after a write whose outcome it could not know.
CREATE TABLE IF NOT EXISTS usage_hourly (
    account       String,
    hour          DateTime('UTC'),
    key_id        String,
    model         String,
    service       String,
    requests      Int64,
    input_tokens  Int64,
    output_tokens Int64,
    cost          Int64
) ENGINE = SummingMergeTree((requests, input_tokens, output_tokens, cost))
PARTITION BY toYYYYMM(hour)
ORDER BY (account, hour, key_id, model, service);

CREATE MATERIALIZED VIEW IF NOT EXISTS usage_hourly_mv TO usage_hourly AS
SELECT
    account,
    toStartOfHour(occurred_at) AS hour,
    key_id,
    model,
    service,
    toInt64(count()) AS requests,
    sum(input_tokens) AS input_tokens,
    sum(output_tokens) AS output_tokens,
    sum(cost) AS cost
FROM usage_events
GROUP BY account, hour, key_id, model, service;
