-- The identities of the stored events, (edge instance, usage partition,
-- sequence), ordered so that the sink can ask cheaply which events of a
-- batch are stored already.
-- A view fills it from every block inserted into usage_events. If an insert
-- fails half-way, this table and usage_events may disagree, but the sink
-- then repairs the batch (Writer.Repair) before it reads another, and the
-- repair writes the identities of all the batch's events once they are all
-- in usage_events: between batches, an identity here means the event is
-- stored. A repair may write an identity twice; readers only test presence.
-- Keep a month here at least as long as an edge may replay a spool of it
-- (the USAGE stream's age limit): a replayed event whose identity is gone
-- would be counted again.
CREATE TABLE IF NOT EXISTS usage_seen (
    edge_instance   String,
    usage_partition UInt32,
    sequence        UInt64,
    occurred_at     DateTime('UTC')
) ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (edge_instance, usage_partition, sequence);

CREATE MATERIALIZED VIEW IF NOT EXISTS usage_seen_mv TO usage_seen AS
SELECT edge_instance, usage_partition, sequence, occurred_at FROM usage_events;

-- The sink's batches: a row is written before a batch's rows are inserted,
-- and the next batch starts only once this one is known to be complete, so
-- only a consumer's last batch can be incomplete. A sink that starts repairs
-- that batch from the stream range it names, and reads on after it. Months
-- older than the one holding each consumer's last batch may be dropped.
CREATE TABLE IF NOT EXISTS sink_batches (
    consumer   String,
    batch_id   UInt64,
    seq_from   UInt64,
    seq_to     UInt64,
    events     UInt32,
    created_at DateTime('UTC')
) ENGINE = MergeTree()
PARTITION BY toYYYYMM(created_at)
ORDER BY (consumer, batch_id);
