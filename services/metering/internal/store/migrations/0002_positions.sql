-- Where each partition's fold stands in the USAGE stream. It is written in
-- the fold's transaction, so a restart resumes exactly after the last
-- committed event, in stream order (the order a rebuild folds in too).
CREATE TABLE metering_positions (
    partition  int    PRIMARY KEY,
    stream_seq bigint NOT NULL
);
