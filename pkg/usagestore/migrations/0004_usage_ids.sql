-- usage_ids replaces usage_seen (0003): the same identities, with index
-- granules of 1,024 rows instead of 8,192. The sink's look-up asks for one
-- sequence range per (edge instance, partition) of a batch, about a hundred
-- ranges of a few hundred events each, and ClickHouse reads every granule a
-- range touches: with 8,192-row granules a 50,000-event batch read about a
-- million rows (measured: the whole table in a benchmark, 50 to 140 ms per
-- look-up); with 1,024 about 150,000. The primary index grows to one entry
-- per 1,024 identities, about 40 MB of memory per billion events kept.
-- Everything said of usage_seen in 0003 holds for usage_ids.
CREATE TABLE IF NOT EXISTS usage_ids (
    edge_instance   String,
    usage_partition UInt32,
    sequence        UInt64,
    occurred_at     DateTime('UTC')
) ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (edge_instance, usage_partition, sequence)
SETTINGS index_granularity = 1024;

-- From here on every insert into usage_events writes both tables, so the
-- copy below misses nothing; an identity copied twice (a rerun of this
-- migration after a crash) is harmless, as readers test presence only.
CREATE MATERIALIZED VIEW IF NOT EXISTS usage_ids_mv TO usage_ids AS
SELECT edge_instance, usage_partition, sequence, occurred_at FROM usage_events;

INSERT INTO usage_ids (edge_instance, usage_partition, sequence, occurred_at)
SELECT edge_instance, usage_partition, sequence, occurred_at FROM usage_seen;
