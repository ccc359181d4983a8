-- usage_ids (0004) kept every stored event's identity, ordered by it, for
-- the sink's look-up of stored events. Since the watermarks (0006) the sink
-- looks up only events at or below their pair's mark (a spool replayed late,
-- a copy, an event out of order), and it asks usage_events itself: a
-- re-published event carries the same account, key and time, which select
-- its granules through usage_events' primary key. Keeping usage_ids cost
-- ClickHouse a third of its work per inserted event (its view sorted and
-- wrote every block again, and merged the parts), for look-ups that have
-- become rare. No sink of an earlier version may run during or after this
-- (README): its look-up would fail until it is stopped.
DROP TABLE IF EXISTS usage_ids_mv;
DROP TABLE IF EXISTS usage_ids;
