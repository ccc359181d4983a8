-- usage_seen is replaced by usage_ids (0004), which holds all it held. It is
-- dropped in a migration of its own so that 0004, run again after a crash,
-- always finds it to copy from. A sink of an earlier version still running
-- fails its next look-up here: stop the old sink before starting the new one
-- (README, upgrading).
DROP TABLE IF EXISTS usage_seen_mv;
DROP TABLE IF EXISTS usage_seen;
