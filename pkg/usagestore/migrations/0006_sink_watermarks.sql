-- For each (edge instance, partition), a sequence no stored event is above:
-- the sink raises it before it inserts events of the pair, so it may be
-- higher than what is stored (a crash between the two), never lower. An
-- event above its pair's mark is therefore new without asking usage_ids;
-- only an event at or below it (a spool replayed late, a copy, an event
-- out of order) is looked up. A pair without a mark has nothing stored.
-- The mark is the highest sequence of a pair's rows (max(sequence)); the
-- engine keeps that row when it merges.
CREATE TABLE IF NOT EXISTS sink_watermarks (
    edge_instance   String,
    usage_partition UInt32,
    sequence        UInt64,
    recorded_at     DateTime('UTC')
) ENGINE = ReplacingMergeTree(sequence)
ORDER BY (edge_instance, usage_partition);

-- The events a sink of an earlier version stored have no marks: give every
-- pair in usage_ids its highest sequence (once; a rerun adds the same marks).
-- No sink of an earlier version may run during or after this (README).
INSERT INTO sink_watermarks (edge_instance, usage_partition, sequence, recorded_at)
SELECT edge_instance, usage_partition, max(sequence), now() FROM usage_ids
GROUP BY edge_instance, usage_partition;
